"""What the entry points do, as plain functions of a composed config (for notebooks, tests)."""

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

import litlab.config.resolvers  # noqa: F401  (registers run_id, used by the run directories)
from litlab.config.check import check_config
from litlab.data.base import run_data_config
from litlab.errors import LitlabError
from litlab.models import Classifier
from litlab.run import objective
from litlab.run.checkpoints import AtomicCheckpointIO, RandomState, load_checkpoint
from litlab.run.directory import RunDir
from litlab.run.faults import Interruption
from litlab.run.resume import resuming, starting_checkpoint
from litlab.speed import ask_cuda_without_nvml_where_no_driver, without_idle_batch_hooks
from litlab.training.console import quiet_lightning
from litlab.training.coverage import TestCoverage, coverage
from litlab.training.loggers import finish_tracking, start_tracking

log = logging.getLogger(__name__)

# What a pretraining stage (an autoencoder's) is judged by.
PRETRAINING_METRIC = "val/loss"


def check_device(cfg: DictConfig) -> None:
    """The one check of a config that needs torch: the accelerator it asks for is here."""
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise LitlabError(
            f"trainer.accelerator={cfg.trainer.accelerator} but torch sees no CUDA GPU here; "
            "train on the CPU with trainer=cpu (speed=cpu for its fastest settings)"
        )


def check_monitor(cfg: DictConfig, model: L.LightningModule) -> None:
    """Checkpointing and early stopping follow `monitor`, sweeps `optimized_metric`: both must
    be metrics this model logs."""
    metrics = getattr(model, "metrics", {})
    logged = {key.replace("_", "/", 1) for key in metrics}  # val_acc -> val/acc
    logged |= {f"val/{model.best_of}_best"} if hasattr(model, "best_of") else set()
    validation = sorted(key for key in logged if key.startswith("val/"))
    if validation and cfg.get("monitor") not in validation:
        raise LitlabError(
            f"monitor={cfg.get('monitor')} is not logged by {type(model).__name__} (it logs "
            f"{', '.join(validation)}); use an experiment made for this model "
            "(e.g. experiment=vae_mlp) or set monitor="
        )
    optimized = cfg.get("optimized_metric")
    if logged and optimized is not None and optimized not in logged:
        raise LitlabError(
            f"optimized_metric={optimized} is not logged by {type(model).__name__}; "
            f"set optimized_metric= to one of {', '.join(sorted(logged))}"
        )


def _instances(group: DictConfig | None) -> list:
    """Instantiate each entry of a callbacks/logger group; `null` entries switch one off."""
    return [instantiate(part) for part in (group or {}).values() if part is not None]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The configured Trainer; its checkpoints also hold the RNG states and are written
    atomically, whatever the config says, so that every run can be resumed."""
    callbacks = [Interruption(), *_instances(cfg.get("callbacks")), RandomState(), TestCoverage()]
    return instantiate(
        cfg.trainer,
        callbacks=[without_idle_batch_hooks(callback) for callback in callbacks],
        logger=_instances(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
    )


def check_writes_inside(trainer: L.Trainer, run: RunDir) -> None:
    """A run writes only inside its directory: a copy never writes where its original did.
    Refuse a Trainer whose root, loggers or callbacks (checkpoints, pictures) would write
    elsewhere, e.g. a path a run's config.yaml recorded outside the run."""
    places = [("trainer.default_root_dir", trainer.default_root_dir)]
    places += [(type(logger).__name__, logger.save_dir) for logger in trainer.loggers]
    places += [(type(c).__name__, getattr(c, "dirpath", None)) for c in trainer.callbacks]
    inside = run.path.resolve()
    for what, place in places:
        if place is not None and not Path(place).resolve().is_relative_to(inside):
            raise LitlabError(
                f"{what} would write to {place}, outside the run directory {run.path}; "
                "point it inside the run (e.g. ${paths.output_dir}/<folder>)"
            )


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if torch.as_tensor(v).numel() == 1}


class RunResult(dict):
    """A run's final metrics by name, and `run_dir`, the directory holding the whole run."""

    def __init__(self, metrics: dict[str, float], run_dir: str | Path):
        super().__init__(metrics)
        self.run_dir = Path(run_dir)


def train(cfg: DictConfig, checked: bool = False) -> RunResult:
    """Seed, build, fit, test the best checkpoint; write config.yaml and metrics.json.

    A config with a `pretrain` section first trains that model in `<run>/pretrain` and starts
    this one from its last checkpoint; `compare_scratch` also trains it from scratch in
    `<run>/scratch`, adding those metrics as `scratch/...`. `checked`: the caller has checked
    `cfg` against the classes it names already (litlab-train does, before Hydra starts).
    """
    if not checked:
        check_config(cfg)
    check_device(cfg)
    run = RunDir(cfg.paths.output_dir)
    if cfg.get("pretrain") is None:
        return RunResult(fit(cfg), run.path)
    pretrain = cfg.pretrain
    resume = resuming(cfg)
    # A resumed run continues the stage it was in: the stages after it may not have started.
    later = {"resume": "auto_or_fresh"} if resume else {}
    fit(
        derived(
            cfg,
            run.path / "pretrain",
            model=pretrain.model,
            data=pretrain.data,
            monitor=PRETRAINING_METRIC,
            monitor_mode=objective.mode(PRETRAINING_METRIC),
            optimized_metric=f"{PRETRAINING_METRIC}_best",
            ckpt_path=None,
            resume=resume,
            **{"trainer.max_epochs": pretrain.max_epochs},
        )
    )
    pretrained = RunDir(run.path / "pretrain").last
    if not pretrained.is_file():
        raise LitlabError(
            f"the pretraining run wrote no {pretrained} (fast_dev_run and callbacks=none "
            "turn checkpointing off); keep callbacks.model_checkpoint with save_last"
        )
    metrics = fit(derived(cfg, run.path, **{"model.init_from": str(pretrained)}, **later))
    if cfg.get("compare_scratch"):
        scratch = fit(
            derived(cfg, run.path / "scratch", ckpt_path=None, **{"model.init_from": None}, **later)
        )
        metrics.update({f"scratch/{k}": v for k, v in scratch.items()})
        if rank_zero_only.rank == 0:
            run.write_metrics(metrics, run.summary().get("best_checkpoint"))
    return RunResult(metrics, run.path)


def derived(cfg: DictConfig, output_dir: Path, **changes) -> DictConfig:
    """A copy of `cfg` for one stage of a multi-stage run: its own directory, no stages."""
    stage = copy.deepcopy(cfg)
    with open_dict(stage):
        for key in ("pretrain", "compare_scratch"):
            stage.pop(key, None)
        stage.paths.output_dir = str(output_dir)
        for key, value in changes.items():
            OmegaConf.update(stage, key, value, merge=False)
    return stage


def fit(cfg: DictConfig) -> dict[str, float]:
    """One training run: the body of `train` for a single model."""
    run = RunDir(cfg.paths.output_dir)
    ask_cuda_without_nvml_where_no_driver()
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    datamodule = instantiate(cfg.data)
    if rank_zero_only.rank == 0:  # missing data is refused before the Trainer says anything
        datamodule.prepare_data()
    model = instantiate(cfg.model)
    check_monitor(cfg, model)
    ckpt_path = starting_checkpoint(cfg)
    if ckpt_path and run.pruned():  # a trial an Optuna pruner stopped stays stopped
        log.info("%s was pruned; it is not trained further", run.path)
        return run.metrics()
    if ckpt_path:  # a clear error for a missing or unsafe file, or one of another model
        check_fits(model, load_checkpoint(ckpt_path)["state_dict"], ckpt_path, cfg.model)
        log.info("resuming from %s", ckpt_path)
    trainer = build_trainer(cfg)
    check_writes_inside(trainer, run)
    if trainer.is_global_zero:
        run.write_config(cfg)
    start_tracking(trainer, cfg)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = _scalars(trainer.callback_metrics)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.get("test", True):  # the best checkpoint; without training, the one resumed from
        tested = best or ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
        metrics.update(_scalars(trainer.callback_metrics))

    if trainer.is_global_zero:
        pruned = any(getattr(callback, "pruned", False) for callback in trainer.callbacks)
        run.write_metrics(metrics, best, pruned)
        log.info("run directory: %s", run.path)
        if "test/acc" in metrics:
            log.info("test accuracy %.4f %s", metrics["test/acc"], coverage(metrics))
    finish_tracking(trainer, cfg, metrics)
    return metrics


def check_fits(model: L.LightningModule, state: dict, ckpt_path, model_cfg: DictConfig) -> None:
    """Refuse a checkpoint whose weights are not those of `model` (same names and shapes)."""
    expected = model.state_dict()
    wrong = sorted(set(state) ^ set(expected)) or [
        k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        net = OmegaConf.select(model_cfg, "net._target_", default=model_cfg.get("_target_"))
        raise LitlabError(
            f"{ckpt_path} holds a different model than the run's {net} "
            f"(first mismatch: {wrong[0]}); pass a checkpoint written by that run"
        )


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
) -> TrainedRun:
    """The run in `run_dir` (or the one `ckpt_path` belongs to) with its best checkpoint (or
    `ckpt_path`); `classifier` refuses runs of models that do not classify; `data_dir` reads
    the run's dataset from there instead of where the run did."""
    run = RunDir.named(run_dir, ckpt_path)
    ckpt_path = run.checkpoint(ckpt_path)
    if not ckpt_path.is_file():
        raise LitlabError(
            f"no checkpoint at {ckpt_path} (runs with debug=fdr or callbacks=none keep none); "
            "pass a run trained with checkpointing, or ckpt_path=<file>"
        )
    run_cfg = run.config()
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
    run = load_run(cfg.get("run_dir"), cfg.get("ckpt_path"), data_dir=cfg.get("data_dir"))
    datamodule = instantiate(run.config.data)
    quiet_lightning()
    trainer = instantiate(
        cfg.trainer, logger=False, enable_checkpointing=False, callbacks=[TestCoverage()]
    )
    metrics = _scalars(trainer.test(run.model, datamodule=datamodule)[0])
    if trainer.is_global_zero:
        RunDir(cfg.paths.output_dir).write_summary(
            run_dir=str(run.run_dir), checkpoint=str(run.checkpoint), metrics=metrics
        )
        log.info("test metrics of %s: %s", run.checkpoint, metrics)
        if "test/acc" in metrics:
            log.info("test accuracy %.4f %s", metrics["test/acc"], coverage(metrics))
    return metrics
