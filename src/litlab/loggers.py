"""What every logger receives besides the metrics: the resolved config, the final numbers, the
run's pictures; and each tracker run closed with its litlab run."""

from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf


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
def log_picture(loggers: list[Logger], path: Path, step: int) -> None:
    """Show a PNG of the run directory in the trackers that keep pictures."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            with Image.open(path) as picture:
                image = np.asarray(picture.convert("RGB"))
            logger.experiment.add_image(path.stem, image, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), "pictures")
        elif isinstance(logger, WandbLogger):
            logger.log_image(path.stem, [str(path)], step=step)
