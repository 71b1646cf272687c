"""What litlab adds to Lightning's loggers: what every logger receives besides the metrics (the
resolved config, the final numbers, the run's pictures), each tracker run closed with its litlab
run, and a CSV logger that a resumed run appends to."""

import csv
import io
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from litlab.files import atomic_write


def _config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


@rank_zero_only
def start_tracking(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Hand the resolved config to every logger as its hyperparameters."""
    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        # A run left open by an interrupted fit in this process would swallow this one.
        if wandb.run is not None:
            wandb.finish(exit_code=1)
    for logger in trainer.loggers:
        logger.log_hyperparams(_config(cfg))


@rank_zero_only
def finish_tracking(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Pair the config with the final metrics where a logger shows them side by side
    (TensorBoard's HPARAMS tab), and close the tracker runs, so their files are complete."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(_config(cfg), metrics=metrics, step=trainer.global_step)
            logger.finalize("success")  # closes the events file it reopened
        elif isinstance(logger, WandbLogger):
            logger.experiment.finish()


@rank_zero_only
def log_picture(loggers: list[Logger], path: Path, step: int, tag: str | None = None) -> None:
    """Show a PNG of the run directory in the trackers that keep pictures, under `tag` (by
    default its name): pictures of one tag at several steps are one series there."""
    tag = tag or path.stem
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            with Image.open(path) as picture:
                image = np.asarray(picture.convert("RGB"))
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), "pictures")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [str(path)], step=step)


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (Lightning deletes it), and grows its header in one atomic
    rewrite before appending rows: a run stopped anywhere leaves a file it can go on with."""

    def _check_log_dir_exists(self) -> None:
        self.metrics_keys = _header(Path(self.metrics_file_path))

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        # The header as the file has it now: a process that did not write it (ddp_spawn tests
        # in processes of its own) has not seen it grow.
        self.metrics_keys = _header(path)
        keys = sorted(set(self.metrics_keys).union(*self.metrics))
        if keys != self.metrics_keys or not path.is_file():
            atomic_write(path, _table(keys, _rows(path)[1]))
            self.metrics_keys = keys
        try:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=keys).writerows(self.metrics)
        except OSError as err:  # a full disk: say which file (a cut-off row is dropped on resume)
            err.filename = err.filename or str(path)
            raise
        self.metrics = []


def _header(path: Path) -> list[str]:
    """A metrics.csv's columns, in its order; none where there is no file yet."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    """A metrics.csv's header and rows; none where there is no file yet."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return list(reader.fieldnames or []), rows


def _step(row: dict) -> int:
    """A row's step; -1 where a cut-off write left none."""
    return int(row["step"]) if (row.get("step") or "").isdigit() else -1


def _tested(row: dict) -> bool:
    return any(key.startswith("test/") and value for key, value in row.items() if key)


def _table(keys: list[str], rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


class ResumedLogs(L.Callback):
    """A resumed run trains again what came after its checkpoint: its CSV rows of those steps go,
    so that they are not logged twice."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None and trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, CSVLogger):
                    logger.forget_after(trainer.global_step)


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, except that a resumed run appends to its `metrics.csv`, and that
    an interruption never costs the rows written so far."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def forget_after(self, step: int) -> None:
        """Drop the rows logged after `step`: a run resumed from a checkpoint of that step logs
        them again, so that an epoch logged but not yet checkpointed is not logged twice; and
        the test rows, since a resumed run tests again when it ends."""
        path = Path(self.experiment.metrics_file_path)
        keys, rows = _rows(path)
        kept = [row for row in rows if _step(row) <= step and not _tested(row)]
        if len(kept) < len(rows):
            atomic_write(path, _table(keys, kept))
