"""What the entry points do, as plain functions of a composed config (for notebooks, tests)."""

import copy
import logging
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

import litlab.config.resolvers  # noqa: F401  (registers run_id, used by the run directories)
from litlab import objective
from litlab.errors import LitlabError
from litlab.run.checkpoints import AtomicCheckpointIO, RandomState, check_fits, load_checkpoint
from litlab.run.directory import RunDir
from litlab.run.faults import Interruption
from litlab.run.plan import Plan, plan_run, planned
from litlab.run.resume import resuming
from litlab.speed import ask_cuda_without_nvml_where_no_driver, without_idle_batch_hooks
from litlab.training.console import quiet_lightning
from litlab.training.coverage import TestCoverage, coverage
from litlab.training.limits import check_limits
from litlab.training.loggers import ResumedLogs, finish_tracking, start_tracking

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
    if hasattr(model, "best_of"):  # litlab's models: also their best and their size
        logged |= {f"val/{model.best_of}_best", objective.PARAMETERS}
    validation = sorted(key for key in logged if key.startswith("val/"))
    if validation and cfg.get("monitor") not in validation:
        raise LitlabError(
            f"monitor={cfg.get('monitor')} is not logged by {type(model).__name__} (it logs "
            f"{', '.join(validation)}); use an experiment made for this model "
            "(e.g. experiment=vae_mlp) or set monitor="
        )
    for optimized in objective.objectives(cfg.get("optimized_metric")):  # one, or several
        if logged and optimized not in logged:
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
    callbacks = [
        Interruption(),  # first: it notes the batch before a configured callback's hooks run
        *_instances(cfg.get("callbacks")),
        RandomState(),
        TestCoverage(),
        ResumedLogs(),
    ]
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


def train(cfg: DictConfig) -> RunResult:
    """Train the run `cfg` describes (see `run_plan`), checking it first: `litlab.train`."""
    return run_plan(plan_run(cfg))


def run_plan(plan: Plan) -> RunResult:
    """Seed, build, fit, test the best checkpoint; write config.yaml and metrics.json.

    A config with a `pretrain` section first trains that model in `<run>/pretrain` and starts
    this one from its last checkpoint; `compare_scratch` also trains it from scratch in
    `<run>/scratch`, adding those metrics as `scratch/...`.
    """
    cfg, run = plan.config, plan.run
    check_device(cfg)
    if cfg.get("pretrain") is None:
        return RunResult(fit(plan), run.path)
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


def derived(cfg: DictConfig, output_dir: Path, **changes) -> Plan:
    """The plan of one stage of a multi-stage run: a copy of `cfg` with its own directory and
    no stages."""
    stage = copy.deepcopy(cfg)
    with open_dict(stage):
        for key in ("pretrain", "compare_scratch"):
            stage.pop(key, None)
        stage.paths.output_dir = str(output_dir)
        for key, value in changes.items():
            OmegaConf.update(stage, key, value, merge=False)
    return planned(stage)


def fit(plan: Plan) -> dict[str, float]:
    """One training run: the body of `run_plan` for a single model."""
    cfg, run, ckpt_path = plan.config, plan.run, plan.checkpoint
    ask_cuda_without_nvml_where_no_driver()
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    datamodule = instantiate(cfg.data)
    if rank_zero_only.rank == 0:  # missing data is refused before the Trainer says anything
        datamodule.prepare_data()
    model = instantiate(cfg.model)
    check_monitor(cfg, model)
    if ckpt_path and run.pruned():  # a trial an Optuna pruner stopped stays stopped
        log.info("%s was pruned; it is not trained further", run.path)
        return run.metrics()
    if ckpt_path:  # a clear error for a missing or unsafe file, or one of another model
        check_fits(model, load_checkpoint(ckpt_path)["state_dict"], ckpt_path, cfg.model)
        log.info("resuming from %s", ckpt_path)
    trainer = build_trainer(cfg)
    check_writes_inside(trainer, run)
    check_limits(trainer, datamodule, cfg.get("train", True), cfg.get("test", True))
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
