"""litlab-train: one run, or a sweep of runs (`-m`), of litlab.training.tasks.run_plan.

A single run is composed once and planned once (litlab.run.plan: its checked config, its run
directory, whether it resumes and from which checkpoint) before torch is imported or anything
is written; Hydra then runs that plan as its job. A sweep is Hydra's (`@hydra.main`): what it
sweeps is checked first, and each of its jobs makes its plan from the config Hydra composed
for it. The other ranks of a DDP run, which Lightning starts with this same command line, run
the plan they are handed.
"""

import copy
import os
import shutil
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

import hydra
from hydra._internal.callbacks import Callbacks
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.core.utils import JobStatus, configure_log, run_job
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from litlab import CONFIG_DIR
from litlab.cli import compose_command, composes_elsewhere, hydra_arguments, overrides_of
from litlab.config.check import check_config
from litlab.config.compose import group_options, without_hydra
from litlab.errors import LitlabError, user_errors
from litlab.run.directory import check_runs_below
from litlab.run.plan import HANDED, Plan, plan_run
from litlab.run.resume import asked
from litlab.run.supervisor import supervise
from litlab.sweeps.jobs import job_errors
from litlab.sweeps.settings import check_sweeper, objective_values
from litlab.sweeps.studies import trial_callback

# What Lightning's DDP launcher sets in the environment of the process that starts the ranks.
_RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", HANDED)
_ABSENT = object()


def main() -> None:
    supervise()  # a parent process that says so when the kernel kills the run
    handed = Plan.handed()
    if handed is not None:  # another rank of a DDP run, started by Lightning
        with user_errors():
            run_here(handed)
        return
    with user_errors():
        args = hydra_arguments(sys.argv)
        single = None if for_hydra(args) else single_run(args)
        if single is None:
            check_sweep(sys.argv)
    if single is None:
        hydra_job()
    else:
        run_single(*single)


def for_hydra(args) -> bool:
    """Whether the command line is Hydra's to run: a sweep, or one of Hydra's own flags."""
    flags = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    return bool(flags or composes_elsewhere(args) or sweeping(args))


def single_run(args) -> tuple[DictConfig, Plan]:
    """The config of the single run the command line asks for, composed once, and its plan: a
    refusal here writes nothing."""
    overrides = overrides_of(args)
    cfg = compose_command(args.config_name or "train", overrides, hydra=True)
    check_resume_command(args.overrides)
    # Hydra names a run directory anew each time its name is read (a timestamp, a random id):
    # hold it to the one planned.
    run_dir = str(Path(cfg.paths.output_dir).absolute())
    with read_write(cfg):
        cfg.hydra.run.dir = cfg.paths.output_dir = run_dir
    job = without_hydra(copy.deepcopy(cfg))
    return cfg, plan_run(job, overrides, cfg.hydra.runtime.choices)


def run_single(cfg: DictConfig, plan: Plan) -> None:
    """Run the plan as Hydra runs a job: its logging, `.hydra/` and Hydra's config set."""
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)  # Hydra's own first, as ever
    context = HydraContext(config_loader=None, callbacks=Callbacks(cfg))
    with user_errors(), nothing_left_if_refused(plan.run.path):
        job = run_job(lambda _: run_here(plan), cfg, "hydra.run.dir", None, context)
        if job.status == JobStatus.FAILED:  # raised here, as one line (not Hydra's words)
            raise job._return_value


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_job(cfg: DictConfig) -> float | None:
    """One job of a sweep; returns `optimized_metric` to a sweeper (Optuna maximizes or
    minimizes it)."""
    job = HydraConfig.get()
    with job_errors():  # in a sweep, a failure fails this job alone
        cfg = trial_callback(cfg, job)
        plan = plan_run(cfg, list(job.overrides.task), job.runtime.choices)
        metrics = run_here(plan)
    return objective_values(metrics, plan.config.get("optimized_metric"))


def run_here(plan: Plan) -> dict:
    """Run `plan` in this process. Lightning starts DDP's other ranks with this command line:
    they are handed the plan in their environment. Those processes end with the run, so the
    next job of a sweep starts its own: forget this one's process group and rank variables."""
    from litlab.run.faults import faults_handled  # torch and Lightning: only once a run starts
    from litlab.training.tasks import run_plan

    ranks = {key: os.environ.get(key) for key in _RANK_VARIABLES}
    os.environ[HANDED] = plan.for_ranks()
    try:
        with faults_handled(plan.run.path):  # a full disk, Ctrl-C, SIGTERM: one line
            return run_plan(plan)
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in ranks.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def holds_results(run_dir: Path) -> bool:
    return any(run_dir.rglob("*.ckpt")) or any(run_dir.rglob("metrics.json"))


@contextmanager
def nothing_left_if_refused(run_dir: Path):
    """A single run refused once its directory is made (missing data, a model that does not
    log the monitored metric, a checkpoint of another model) leaves no directory behind: the
    folders made for it go, unless something in them is worth keeping."""
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    try:
        yield
    except (LitlabError, HydraException, OmegaConfBaseException):
        if made and not holds_results(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            for folder in made[1:]:  # logs/train/runs, where this made them
                with suppress(OSError):
                    folder.rmdir()  # only if still empty
        raise


# --- what a command line asks for -------------------------------------------------------------


def _value(overrides: list[str], key: str):
    """The value the last `key=...` override gives, or None."""
    given = [arg for arg in overrides if arg.startswith(f"{key}=")]
    return OverridesParser.create().parse_override(given[-1]).value() if given else None


def sweeping(args) -> bool:
    """Whether the command line asks for a sweep (a search config makes one by itself)."""
    if _value(args.overrides, "hydra.mode") == "RUN":
        return False
    return args.multirun or _value(args.overrides, "hparams_search") is not None


def check_resume_command(overrides: list[str]) -> None:
    """A run to continue must be named, and exist."""
    given = _value(overrides, "resume")
    resume, _ = asked(given, _value(overrides, "ckpt_path"))
    if not resume:
        return
    words = f"resume={given}" if given else "ckpt_path=last"
    run_dir = _value(overrides, "hydra.run.dir")
    if run_dir is None:
        raise LitlabError(
            f"{words} continues a run: name its directory with hydra.run.dir=logs/train/runs/<run>"
        )
    if resume != "auto_or_fresh" and not Path(run_dir).is_dir():
        raise LitlabError(f"{words}: there is no run directory {run_dir}")


def check_sweep(argv: list[str]) -> None:
    """Before a sweep writes anything: compose its first job and check that every swept key
    exists and that every value swept fits it, so that a typo ends in one error line, not in
    failing jobs (Optuna samples its ranges only after starting, a cluster only after
    queueing)."""
    args = hydra_arguments(argv)
    if composes_elsewhere(args) or not sweeping(args):
        return
    given = args.overrides
    check_runs_below(_value(given, "hydra.sweep.dir"), _value(given, "trust_run") or False)
    name = args.config_name or "train"
    fixed, values = [], {}  # values: each swept key's values (none for Optuna's ranges)
    for override in OverridesParser.create().parse_overrides(overrides_of(args)):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key = override.get_key_element()
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP:  # as Hydra's sweeper picks
            options = group_options(name, override.key_or_group, fixed)
            values[key] = override.value().filter(options)
            if not values[key]:
                raise LitlabError(
                    f"{override.input_line} picks none of {key}'s options "
                    f"({', '.join(options)}); widen the pattern"
                )
            continue
        try:
            swept = list(override.sweep_string_iterator())
        except HydraException:
            swept = []  # a range for Optuna to sample
        values[key] = swept
    first = [f"{key}={swept[0]}" for key, swept in values.items() if swept]
    cfg = compose_command(name, [*fixed, *first], hydra=True)
    check_sweeper(cfg, overrides_of(args))
    for key, swept in values.items():  # every choice and value swept must fit too
        for value in swept[1:]:
            job = compose_command(name, [*fixed, *first, f"{key}={value}"])
            check_config(job)
    groups = cfg.hydra.runtime.choices  # a config group swept is no key of the config
    swept = [key for key in values if not key.startswith("+") and key not in groups]
    swept += list(OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {})
    for key in swept:
        if "/" not in key and OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise LitlabError(
                f"cannot sweep {key}: the config has no such key; check its spelling "
                f"(litlab-train --cfg job shows the config), or add one with +{key}=..."
            )
    check_config(without_hydra(cfg), overrides_of(args))


if __name__ == "__main__":
    main()
