"""A trained run, loaded back to be tested, predicted with or exported: its config, read where
the run now is, and its model, filled from a checkpoint of that model."""

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from litlab.data.base import run_data_config
from litlab.errors import LitlabError
from litlab.models import Classifier
from litlab.run.checkpoints import check_fits, load_checkpoint
from litlab.run.directory import RunDir
from litlab.training.console import quiet_lightning
from litlab.training.coverage import TestCoverage, coverage

log = logging.getLogger(__name__)


def load_model(model_cfg: DictConfig, ckpt_path: Path) -> L.LightningModule:
    """Build the model a run's config describes and fill it from a checkpoint of that model."""
    state = load_checkpoint(ckpt_path)["state_dict"]
    model = instantiate(model_cfg)
    check_fits(model, state, ckpt_path, model_cfg)
    model.load_state_dict(state)
    return model


@dataclass
class TrainedRun:
    """A trained run loaded back: its directory, the checkpoint read, its config (reading what
    the run's data fitted, e.g. its vocabulary, wherever the run now lives) and its model, in
    eval mode."""

    run_dir: Path
    checkpoint: Path
    config: DictConfig
    model: L.LightningModule


def load_run(
    run_dir: str | Path | None = None,
    ckpt_path: str | Path | None = None,
    classifier: bool = False,
    data_dir: str | None = None,
    trust_run: bool = False,
) -> TrainedRun:
    """The run in `run_dir` (or the one `ckpt_path` belongs to) with its best checkpoint (or
    `ckpt_path`); `classifier` refuses runs of models that do not classify; `data_dir` reads
    the run's dataset from there instead of where the run did. Its config is checked before
    anything is built (`trust_run`: see litlab.config.trust)."""
    run = RunDir.named(run_dir, ckpt_path, trust_run)
    ckpt_path = run.checkpoint(ckpt_path)
    if not ckpt_path.is_file():
        raise LitlabError(
            f"no checkpoint at {ckpt_path} (runs with callbacks=none keep none, debug=fdr only "
            "last.ckpt); pass a run trained with checkpointing, or ckpt_path=<file>"
        )
    run_cfg = run.config(trust_run)
    if data_dir:
        if "data_dir" not in run_cfg.data:
            raise LitlabError(
                f"data_dir={data_dir}: the run's data ({run_cfg.data._target_}) is not read "
                "from a data_dir; leave data_dir out to read it where the run did"
            )
        run_cfg.data.data_dir = data_dir
    run_cfg.data = run_data_config(run_cfg.data, run.path)
    model = load_model(run_cfg.model, ckpt_path).eval()
    if classifier and not isinstance(model, Classifier):
        raise LitlabError(
            f"{run.path} trained a {type(model).__name__}, which does not classify; "
            "pass the run of a classifier"
        )
    return TrainedRun(run.path, ckpt_path, run_cfg, model)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a trained run with its own config; write metrics.json to this eval's directory."""
    run = load_run(
        cfg.get("run_dir"),
        cfg.get("ckpt_path"),
        data_dir=cfg.get("data_dir"),
        trust_run=cfg.get("trust_run", False),
    )
    datamodule = instantiate(run.config.data)
    quiet_lightning()
    trainer = instantiate(
        cfg.trainer, logger=False, enable_checkpointing=False, callbacks=[TestCoverage()]
    )
    tested = trainer.test(run.model, datamodule=datamodule)[0]
    metrics = {k: float(v) for k, v in sorted(tested.items()) if torch.as_tensor(v).numel() == 1}
    if trainer.is_global_zero:
        RunDir(cfg.paths.output_dir).write_summary(
            run_dir=str(run.run_dir), checkpoint=str(run.checkpoint), metrics=metrics
        )
        log.info("test metrics of %s: %s", run.checkpoint, metrics)
        if "test/acc" in metrics:
            log.info("test accuracy %.4f %s", metrics["test/acc"], coverage(metrics))
    return metrics
