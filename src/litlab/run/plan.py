"""A run's plan, made before anything is written: its checked config, its directory, whether it
resumes and the checkpoint it starts from. `litlab-train`, each job of a sweep and
`litlab.train(cfg)` in a notebook make one the same way and hand it to
`litlab.training.tasks.run_plan`. No torch here: a refused plan costs no more than its config.
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from litlab.config.check import check_config
from litlab.run.directory import RunDir
from litlab.run.resume import resumed_config, resuming, starting_point

# How a process that Lightning's DDP launcher starts for another rank gets its run's plan.
HANDED = "LITLAB_RANK_PLAN"


@dataclass(frozen=True)
class Plan:
    config: DictConfig
    run: RunDir
    resume: str | None  # the resume mode in force: auto, auto_or_fresh, or None (fresh)
    checkpoint: str | None  # what `fit` starts from

    def for_ranks(self) -> str:
        """The plan as text for the other ranks' processes, its config resolved here (where
        the run's id and Hydra's choices are)."""
        config = OmegaConf.to_container(self.config, resolve=True)
        return OmegaConf.to_yaml(
            {"config": config, "resume": self.resume, "checkpoint": self.checkpoint}
        )

    @classmethod
    def handed(cls) -> "Plan | None":
        """The plan handed to this process, where it is another rank of a run (see HANDED)."""
        text = os.environ.get(HANDED)
        if text is None or "LOCAL_RANK" not in os.environ:
            return None
        handed = OmegaConf.create(text)
        return cls(handed.config, RunDir.of(handed.config), handed.resume, handed.checkpoint)


def plan_run(
    cfg: DictConfig,
    overrides: Sequence[str] | None = None,
    choices: Mapping[str, str | None] | None = None,
) -> Plan:
    """The plan for `cfg`, refused here (a LitlabError) where the config or its run directory
    is wrong. `overrides` and `choices` (the config groups chosen) come with a config composed
    from a command line: a resumed run goes on with its own config, with the values given
    there (`trainer.max_epochs=20`), and a config file that names a missing class is found in
    the folders they add."""
    if overrides is not None and resuming(cfg):
        cfg = resumed_job(cfg, overrides, choices or {})
    check_config(cfg, overrides or ())
    return planned(cfg)


def planned(cfg: DictConfig) -> Plan:
    """The plan for a config checked already (a stage of a checked run)."""
    resume, checkpoint = starting_point(cfg)
    return Plan(cfg, RunDir.of(cfg), resume, checkpoint)


def resumed_job(cfg: DictConfig, overrides: Sequence[str], choices: Mapping) -> DictConfig:
    """A resumed run's own config with the values the command line's `overrides` set (see
    litlab.run.resume.resumed_config); Hydra's own overrides are not the run's."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    parsed = [o for o in parsed if not o.is_hydra_override()]
    chosen = [o.input_line for o in parsed if o.key_or_group in choices]
    values = [o.key_or_group for o in parsed if o.key_or_group not in choices]
    return resumed_config(cfg, values, chosen)
