"""A run's directory and what litlab keeps in it: `config.yaml` (the resolved config the run
ran with), `metrics.json` (its final metrics and best checkpoint) and `checkpoints/` (`last.ckpt`
and the best one). No torch here: a command line is checked against a run before torch loads.

A run travels: copied or moved, it is read where it now is. Its config and checkpoints record
absolute paths into the directory it was trained in; read back, those are re-rooted at the
directory where the run is now (`reroot`), so that nothing follows them to the original.
"""

import json
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from litlab.config.trust import check_run_config
from litlab.errors import LitlabError, first_line
from litlab.files import atomic_write


def reroot(value, old: str | Path, new: str | Path):
    """`value` (a string, or dicts and lists holding strings) with each path at or below the
    absolute directory `old` moved to the same place below `new`; a URI's path too
    (`sqlite:///<old>/mlflow.db`). Other paths stay as they are, and so does everything when
    `old` is relative (it would also match words that are no paths)."""
    old, new = os.path.normpath(old), str(new)
    if not os.path.isabs(old) or old in (os.sep, os.path.normpath(new)):
        return value
    below_old = re.compile(rf"^([A-Za-z][\w+.-]*:/*)?{re.escape(old)}(?=/|$)")

    def moved(item):
        if isinstance(item, str):
            return below_old.sub(lambda m: (m.group(1) or "") + new, item, count=1)
        if isinstance(item, dict):  # keys too: Lightning keys checkpoints by their paths
            return {moved(key): moved(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(moved(v) for v in item)
        return item

    return moved(value)


def check_runs_below(folder: str | Path | None, trust: bool = False) -> None:
    """Check every run below `folder` (a sweep's jobs and their stages) as `RunDir.config`
    does; a folder that is not there holds none."""
    if folder is None or not Path(folder).is_dir():
        return
    for config_file in sorted(Path(folder).rglob("config.yaml")):
        if config_file.parent.name != ".hydra":  # Hydra's record of a job, not a run's config
            RunDir(config_file.parent).config(trust)


class RunDir:
    """The run in `path`; its checkpoints are in `checkpoints` (by default `<path>/checkpoints`)."""

    def __init__(self, path: str | Path, checkpoints: str | Path | None = None):
        self.path = Path(path)
        self.checkpoints = Path(checkpoints) if checkpoints else self.path / "checkpoints"

    @classmethod
    def of(cls, cfg: DictConfig) -> "RunDir":
        """The run a train config writes: `paths.output_dir`, with its checkpoints where the
        checkpoint callback puts them."""
        dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
        return cls(cfg.paths.output_dir, dirpath)

    @classmethod
    def named(
        cls, run_dir: str | Path | None, ckpt_path: str | Path | None = None, trust: bool = False
    ) -> "RunDir":
        """The run in `run_dir`, or the one `ckpt_path` (`<run>/checkpoints/<file>`) belongs to;
        its config is read and checked now (`trust`: see `config`)."""
        if run_dir is None and ckpt_path is None:
            raise LitlabError(
                "say which run to use: run_dir=logs/train/runs/<run> or ckpt_path=<file>"
            )
        run = cls(run_dir if run_dir is not None else Path(ckpt_path).resolve().parent.parent)
        if not run.config_file.is_file():
            raise LitlabError(
                f"{run.path} is not a litlab run directory (no config.yaml); pass run_dir= of a run"
            )
        run.config(trust)  # readable and safe to build, or refused now
        return run

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def failure_file(self) -> Path:
        """The error that ended a job of a sweep (see litlab.sweeps.jobs)."""
        return self.path / "error.txt"

    def failure(self) -> str | None:
        """The error line that ended the job; None where none did."""
        if not self.failure_file.is_file():
            return None
        return (self.failure_file.read_text().splitlines() or [""])[0]

    def write_failure(self, message: str, details: str = "") -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.failure_file, f"{message}\n" + (f"\n{details}" if details else ""))

    @property
    def last(self) -> Path:
        """The checkpoint a resumed run continues from."""
        return self.checkpoints / "last.ckpt"

    def config(self, trust: bool = False) -> DictConfig:
        """The run's config.yaml, its paths into the directory it was trained in (its recorded
        `paths.output_dir`) re-rooted here; checked as litlab-train checks a new config, and
        for what it names (litlab.config.trust: a run may have come from anywhere; `trust`,
        the user's `trust_run=true`, lets classes of other packages through)."""
        try:
            recorded = OmegaConf.load(self.config_file)
            if not isinstance(recorded, DictConfig):
                raise LitlabError("not a mapping of settings")
            trained_in = OmegaConf.select(recorded, "paths.output_dir", default=None)
        except (OSError, UnicodeDecodeError, YAMLError, OmegaConfBaseException, LitlabError) as err:
            mark = getattr(err, "problem_mark", None)  # where YAML stopped making sense
            reason = f"{err.problem}, line {mark.line + 1}" if mark else first_line(err)
            raise LitlabError(
                f"cannot read {self.config_file} ({reason}); it is the config litlab-train "
                "wrote for the run: copy the run again, or pass run_dir= of another run"
            ) from err
        if trained_in:
            here = self.path.absolute()
            recorded = OmegaConf.create(reroot(OmegaConf.to_container(recorded), trained_in, here))
        check_run_config(recorded, self.config_file, trust)
        return recorded

    def check_writable(self) -> None:
        """Refuse a run whose directory, or a folder or file in it, cannot be written (a
        read-only copy or mount): a resumed run would fail halfway through."""
        for path in [self.path, *sorted(self.path.rglob("*"))]:
            if not os.access(path, os.W_OK):
                raise LitlabError(
                    f"cannot write to {path}: a resumed run writes its checkpoints and logs in "
                    f"{self.path}; make it writable (chmod -R u+w), or copy the run somewhere "
                    "writable and resume the copy"
                )

    def write_config(self, cfg: DictConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config_file, OmegaConf.to_yaml(cfg, resolve=True))

    def summary(self) -> dict:
        """metrics.json as written; empty while the run has not finished."""
        return json.loads(self.metrics_file.read_text()) if self.metrics_file.is_file() else {}

    def metrics(self) -> dict[str, float]:
        return self.summary().get("metrics", {})

    def write_summary(self, **summary) -> None:
        atomic_write(self.metrics_file, json.dumps(summary, indent=2) + "\n")

    def pruned(self) -> bool:
        """Whether an Optuna pruner stopped this run early (see litlab.sweeps.studies)."""
        return bool(self.summary().get("pruned"))

    def write_metrics(
        self, metrics: dict[str, float], best: str | Path | None = None, pruned: bool = False
    ) -> None:
        """metrics.json of a trained run: its final `metrics` and its best checkpoint (a path,
        kept relative to the run, so that the run can move); `"pruned": true` for a run an
        Optuna pruner stopped early."""
        if best:
            best = Path(best) if Path(best).is_absolute() else self.path / best
            best = str(best.resolve().relative_to(self.path.resolve()))
        self.write_summary(
            metrics=metrics, best_checkpoint=best or None, **({"pruned": True} if pruned else {})
        )

    def checkpoint(self, given: str | Path | None = None) -> Path:
        """`given`, else the run's best checkpoint (metrics.json says which), else its last."""
        if given is not None:
            return Path(given)
        best = self.summary().get("best_checkpoint")
        return self.path / best if best else self.last
