"""A run's directory and what litlab keeps in it: `config.yaml` (the resolved config the run
ran with), `metrics.json` (its final metrics and best checkpoint) and `checkpoints/` (`last.ckpt`
and the best one). No torch here: a command line is checked against a run before torch loads."""

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from litlab.errors import LitlabError
from litlab.files import atomic_write


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
    def named(cls, run_dir: str | Path | None, ckpt_path: str | Path | None = None) -> "RunDir":
        """The run in `run_dir`, or the one `ckpt_path` (`<run>/checkpoints/<file>`) belongs to."""
        if run_dir is None and ckpt_path is None:
            raise LitlabError(
                "say which run to use: run_dir=logs/train/runs/<run> or ckpt_path=<file>"
            )
        run = cls(run_dir if run_dir is not None else Path(ckpt_path).resolve().parent.parent)
        if not run.config_file.is_file():
            raise LitlabError(
                f"{run.path} is not a litlab run directory (no config.yaml); pass run_dir= of a run"
            )
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
    def last(self) -> Path:
        """The checkpoint a resumed run continues from."""
        return self.checkpoints / "last.ckpt"

    def config(self) -> DictConfig:
        return OmegaConf.load(self.config_file)

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
        """Whether an Optuna pruner stopped this run early (see litlab.studies)."""
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
