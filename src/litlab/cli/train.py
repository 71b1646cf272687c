"""litlab-train: one run, or a sweep of runs (`-m`), of litlab.tasks.train."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from litlab import CONFIG_DIR
from litlab.cli import user_errors
from litlab.errors import LitlabError
from litlab.tasks import resumed_config, train

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
    """Before Hydra makes a directory: a run to continue must be named, and exist."""
    if sweeping(argv):  # each job of a sweep finds its own directory
        return
    resume, ckpt_path = _value(argv, "resume"), _value(argv, "ckpt_path")
    if not resume and ckpt_path != "last":
        return
    asked = f"resume={resume}" if resume else "ckpt_path=last"
    run_dir = _value(argv, "hydra.run.dir")
    if run_dir is None:
        raise LitlabError(
            f"{asked} continues a run: name its directory with hydra.run.dir=logs/train/runs/<run>"
        )
    if resume != "auto_or_fresh" and not Path(run_dir).is_dir():
        raise LitlabError(f"{asked}: there is no run directory {run_dir}")


def check_sweep(argv: list[str]) -> None:
    """Before a sweep writes anything: compose its first job and check that every swept key
    exists, so that a typo ends in one error line, not in failing jobs (Optuna samples its
    ranges only after starting, a cluster only after queueing)."""
    if not sweeping(argv):
        return
    if any(arg.split("=", 1)[0] in _VALUE_OPTIONS for arg in argv):
        return  # configs from elsewhere: leave them to Hydra
    fixed, values = [], {}  # values: each swept key's values (none for Optuna's ranges)
    for override in OverridesParser.create().parse_overrides(
        [arg for arg in argv[1:] if not arg.startswith("-")]
    ):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        try:
            swept = list(override.sweep_string_iterator())
        except HydraException:
            swept = []  # a range for Optuna to sample
        values[override.get_key_element()] = swept
    first = [f"{key}={swept[0]}" for key, swept in values.items() if swept]
    cfg = _compose([*fixed, *first])
    for key, swept in values.items():  # every choice of a config group must exist too
        if key in cfg.hydra.runtime.choices:
            for value in swept[1:]:
                _compose([*fixed, *first, f"{key}={value}"])
    swept = [key for key in values if not key.startswith("+")]
    swept += list(OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {})
    for key in swept:
        if "/" not in key and OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise LitlabError(
                f"cannot sweep {key}: the config has no such key; check its spelling "
                f"(litlab-train --cfg job shows the config), or add one with +{key}=..."
            )


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            return compose("train", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err).split("Config search path")[0]  # the choices, not the search path
        raise LitlabError(" ".join(message.split())) from err


def job_config(cfg: DictConfig) -> DictConfig:
    """For a resumed run, its own config with the values this command line sets (see
    litlab.tasks.resumed_config); otherwise `cfg` as Hydra composed it."""
    if not (cfg.get("resume") or cfg.get("ckpt_path") == "last"):
        return cfg
    job = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(job.overrides.task))
    choices = [o.input_line for o in overrides if o.key_or_group in job.runtime.choices]
    values = [o.key_or_group for o in overrides if o.key_or_group not in job.runtime.choices]
    return resumed_config(cfg, values, choices)


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
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in ranks.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def run(cfg: DictConfig) -> float | None:
    """One job; returns `optimized_metric` to a sweeper (Optuna maximizes or minimizes it)."""
    with user_errors(), sweep_job():
        cfg = job_config(cfg)
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


def main() -> None:
    with user_errors():
        check_resume_command(sys.argv)
        check_sweep(sys.argv)
    run()


if __name__ == "__main__":
    main()
