"""What resuming means, decided from a config and its run directory alone (no torch, so that a
command line is refused before anything is imported or written): which checkpoint a run starts
from, and the config a resumed run goes on with."""

import os
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from litlab.errors import LitlabError
from litlab.run.directory import RunDir


def asked(resume: str | None, ckpt_path: str | None) -> tuple[str | None, str | None]:
    """(the resume mode asked for, the checkpoint asked for otherwise): `ckpt_path=last` means
    `resume=auto` (or the resume mode given with it)."""
    if ckpt_path == "last":
        return resume or "auto", None
    return resume, ckpt_path


def resuming(cfg: DictConfig) -> str | None:
    """The resume mode a config asks for (see `asked`); None for a fresh run."""
    return asked(cfg.get("resume"), cfg.get("ckpt_path"))[0]


def _flat(cfg: DictConfig) -> dict:
    """Every resolved leaf value of a config, by dotted key."""
    out, todo = {}, [("", OmegaConf.to_container(cfg, resolve=True))]
    while todo:
        prefix, node = todo.pop()
        for key, value in node.items():
            if isinstance(value, dict) and value:
                todo.append((f"{prefix}{key}.", value))
            else:
                out[f"{prefix}{key}"] = value
    return out


def resumed_config(
    cfg: DictConfig, values: Sequence[str] = (), choices: Sequence[str] = ()
) -> DictConfig:
    """The config a resumed run goes on with: its own `config.yaml` in `paths.output_dir` (its
    paths re-rooted there, if the run was copied or moved), with the values at the dotted keys
    `values` (given now, e.g. `trainer.max_epochs`) from `cfg`.

    Config choices given now (`choices`, e.g. `experiment=mlp_relu`) must build the run it
    is: a restart script may repeat its whole command line, but not swap the run's parts.
    """
    run = RunDir.of(cfg)
    if not run.config_file.is_file():
        return cfg  # it never got going: start as configured
    resumed = run.config(cfg.get("trust_run", False))  # as asked now, not as recorded
    for key in ("paths.output_dir", "resume", "ckpt_path", *values):
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    if choices:
        now, before = _flat(cfg), _flat(resumed)
        differ = [k for k in sorted(now.keys() | before.keys()) if now.get(k) != before.get(k)]
        if differ:
            key = differ[0]
            raise LitlabError(
                f"{' '.join(choices)} builds another run than the one in {run.path} "
                f"({key}={now.get(key)!r}, there {before.get(key)!r}); leave the config "
                "choices out to continue that run with its own config"
            )
    return resumed


def rescheduled() -> bool:
    """Whether a scheduler may run this job again after a preemption: a job started by submitit
    (a rerun finds its own directory again) or one SLURM has requeued."""
    return "SUBMITIT_EXECUTOR" in os.environ or os.environ.get("SLURM_RESTART_COUNT", "0") != "0"


def starting_point(cfg: DictConfig) -> tuple[str | None, str | None]:
    """(the resume mode in force, the checkpoint `fit` starts from): the run's own last.ckpt
    when resuming, else `ckpt_path`.

    `resume=auto` needs that last.ckpt, in a run it can write to; `auto_or_fresh`, the default
    for a job a scheduler may rerun, starts as configured when there is none yet. A fresh run
    refuses a directory that already holds a run, so nothing is overwritten.
    """
    resume, given = asked(cfg.get("resume"), cfg.get("ckpt_path"))  # values: litlab.config.check
    if resume is None and rescheduled():
        resume = "auto_or_fresh"
    run = RunDir.of(cfg)
    last = run.last
    if resume and last.is_file():
        run.check_writable()
        return resume, str(last)
    if resume == "auto":
        raise LitlabError(
            f"nothing to resume in {run.path} (no {last}); name the run with "
            "hydra.run.dir=<run directory>, or pass resume=auto_or_fresh to start fresh where "
            "there is no checkpoint yet"
        )
    if resume is None and cfg.get("train", True) and last.is_file():
        raise LitlabError(
            f"{run.path} already holds a run ({last}); continue it with resume=auto, or train "
            "in a new directory"
        )
    return resume, given
