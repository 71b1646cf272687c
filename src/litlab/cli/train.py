"""litlab-train: one run, or a sweep of runs (`-m`), of litlab.training.tasks.train.

Every refusal that needs only the config and the run directory comes first, before torch is
imported and before Hydra makes a directory, so that a refused command writes nothing.
"""

import os
import shutil
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from litlab import CONFIG_DIR
from litlab.cli import (
    compose_command,
    composes_elsewhere,
    hydra_arguments,
    overrides_of,
    user_errors,
)
from litlab.config.check import check_config
from litlab.config.compose import without_hydra
from litlab.errors import LitlabError
from litlab.run.directory import check_runs_below
from litlab.run.resume import asked, resumed_config, resuming, starting_checkpoint
from litlab.sweeps.studies import trial_callback

# Hydra's command-line options that take a value of their own.
_VALUE_OPTIONS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir")
_ABSENT = object()
# What Lightning's DDP launcher sets in the environment of the process that starts the ranks.
_RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _value(argv: list[str], key: str):
    """The value the last `key=...` override on the command line gives, or None."""
    given = [arg for arg in argv[1:] if arg.startswith(f"{key}=")]
    return OverridesParser.create().parse_override(given[-1]).value() if given else None


def sweeping(argv: list[str]) -> bool:
    """Whether the command line asks for a sweep (a search config makes one by itself)."""
    if _value(argv, "hydra.mode") == "RUN":
        return False
    return bool({"-m", "--multirun"} & set(argv)) or _value(argv, "hparams_search") is not None


def check_resume_command(argv: list[str]) -> None:
    """A run to continue must be named, and exist."""
    if sweeping(argv):  # each job of a sweep finds its own directory
        return
    given = _value(argv, "resume")
    resume, _ = asked(given, _value(argv, "ckpt_path"))
    if not resume:
        return
    words = f"resume={given}" if given else "ckpt_path=last"
    run_dir = _value(argv, "hydra.run.dir")
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
    if not sweeping(argv) or composes_elsewhere(args):
        return
    check_runs_below(_value(argv, "hydra.sweep.dir"), _value(argv, "trust_run") or False)
    name = args.config_name or "train"
    fixed, values = [], {}  # values: each swept key's values (none for Optuna's ranges)
    for override in OverridesParser.create().parse_overrides(overrides_of(args)):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        try:
            swept = list(override.sweep_string_iterator())
        except HydraException:
            swept = []  # a range for Optuna to sample
        values[override.get_key_element()] = swept
    first = [f"{key}={swept[0]}" for key, swept in values.items() if swept]
    cfg = compose_command(name, [*fixed, *first], hydra=True)
    for key, swept in values.items():  # every choice and value swept must fit too
        for value in swept[1:]:
            job = compose_command(name, [*fixed, *first, f"{key}={value}"])
            check_config(job)
    swept = [key for key in values if not key.startswith("+")]
    swept += list(OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {})
    for key in swept:
        if "/" not in key and OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise LitlabError(
                f"cannot sweep {key}: the config has no such key; check its spelling "
                f"(litlab-train --cfg job shows the config), or add one with +{key}=..."
            )
    check_config(without_hydra(cfg), overrides_of(args))


def check_run(argv: list[str]) -> Path | None:
    """Refuse a single run whose config or run directory is wrong, before Hydra makes that
    directory; the directory the run will write (None for what is not a run to check here)."""
    args = hydra_arguments(argv)
    if composes_elsewhere(args) or sweeping(argv):
        return None  # a sweep: see check_sweep
    cfg = compose_command(args.config_name or "train", overrides_of(args), hydra=True)
    if args.help or args.cfg or args.info:
        return None  # they compose; that is all they need
    check_resume_command(argv)
    choices = cfg.hydra.runtime.choices
    cfg = job_config(without_hydra(cfg), args.overrides, choices)
    check_config(cfg, overrides_of(args))  # a resumed run's own, with the values given now
    starting_checkpoint(cfg)  # resuming needs a run; a fresh run may not overwrite one
    return Path(cfg.paths.output_dir).resolve()


def job_config(cfg: DictConfig, overrides: list[str], choices: dict) -> DictConfig:
    """For a resumed run, its own config with the values the command line's `overrides` set
    (see litlab.run.resume.resumed_config; `choices`: the config groups chosen); otherwise `cfg`."""
    if not resuming(cfg):
        return cfg
    parsed = OverridesParser.create().parse_overrides(overrides)
    parsed = [o for o in parsed if not o.is_hydra_override()]  # Hydra's own, not the run's
    chosen = [o.input_line for o in parsed if o.key_or_group in choices]
    values = [o.key_or_group for o in parsed if o.key_or_group not in choices]
    return resumed_config(cfg, values, chosen)


@contextmanager
def sweep_job():
    """Let each job of a sweep train with DDP, one job after another in this process.

    Lightning starts the processes of ranks > 0 with this command line plus
    `hydra.run.dir=<hydra.run.dir>`; in a sweep that line holds the whole sweep, and
    `hydra.run.dir` is no job's directory: give them the job's own overrides and directory,
    as a single run (a search config would make a sweep of it).
    Those processes end with the job, so the next job must start its own: forget this one's
    process group and the rank variables Lightning set.
    """
    job = HydraConfig.get()
    if job.mode != RunMode.MULTIRUN:
        yield
        return
    options, args = [], iter(sys.argv[1:])
    for arg in args:
        if arg in _VALUE_OPTIONS:
            options += [arg, next(args, "")]
        elif arg.split("=", 1)[0] in _VALUE_OPTIONS:
            options.append(arg)
    job_argv = [sys.argv[0], *options, *job.overrides.task, "hydra.mode=RUN"]
    argv, sys.argv = sys.argv, job_argv
    with read_write(job.run):
        job.run.dir = job.runtime.output_dir
    ranks = {key: os.environ.get(key) for key in _RANK_VARIABLES}
    try:
        yield
    finally:
        sys.argv = argv
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in ranks.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# The folders this command makes for its run directory, deepest first (see main).
_new_folders: list[Path] = []
# Whether main() has checked the single run this command makes (its config, once).
_checked_run = False


def holds_results(run_dir: Path) -> bool:
    return any(run_dir.rglob("*.ckpt")) or any(run_dir.rglob("metrics.json"))


@contextmanager
def nothing_left_if_refused():
    """A single run refused once Hydra has made its directory (missing data, a model that does
    not log the monitored metric, a checkpoint of another model) leaves no directory behind:
    the one this command made goes, unless something in it is worth keeping."""
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    try:
        yield
    except (LitlabError, HydraException, OmegaConfBaseException):
        if _new_folders and run_dir == _new_folders[0] and not holds_results(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            for folder in _new_folders[1:]:  # logs/train/runs, where this made them
                with suppress(OSError):
                    folder.rmdir()  # only if still empty
        raise


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def run(cfg: DictConfig) -> float | None:
    """One job; returns `optimized_metric` to a sweeper (Optuna maximizes or minimizes it)."""
    with user_errors(), nothing_left_if_refused(), sweep_job():
        from litlab.training.tasks import train  # torch and Lightning: only once a run starts

        job = HydraConfig.get()
        cfg = job_config(cfg, list(job.overrides.task), job.runtime.choices)
        cfg = trial_callback(cfg, job)
        metrics = train(cfg, checked=_checked_run)
    return metrics.get(cfg.get("optimized_metric"))


def main() -> None:
    global _checked_run
    with user_errors():
        run_dir = check_run(sys.argv)
        check_sweep(sys.argv)
    _checked_run = run_dir is not None
    if run_dir is not None and not run_dir.exists():
        # Hydra names a run directory anew each time it composes (a timestamp, a random id):
        # hold it to the one checked, so that a refusal knows what this command made.
        sys.argv.append(f'hydra.run.dir="{run_dir}"')
        _new_folders.extend(p for p in (run_dir, *run_dir.parents) if not p.exists())
    run()


if __name__ == "__main__":
    main()
