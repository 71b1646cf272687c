"""Compose and run litlab configs in-process (notebooks, tests) without `@hydra.main`."""

from collections.abc import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

import litlab.config.resolvers  # noqa: F401  (registers run_id, used by the run directories)
from litlab import CONFIG_DIR
from litlab.config.files import check_config_files


def compose(
    config_name: str = "train", overrides: Sequence[str] = (), hydra: bool = False
) -> DictConfig:
    """The config `litlab-<config_name> <overrides>` would run, with its run directory fixed;
    `hydra` keeps Hydra's own settings in it too (the sweeper's, the config choices made).

    Hydra's global state is set up and torn down inside, so calling this again is safe.
    A config file Hydra would misread or cannot parse is refused first (litlab.config.files).
    """
    check_config_files(overrides)
    with initialize_config_dir(
        version_base="1.3", config_dir=str(CONFIG_DIR), job_name=config_name
    ):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
        # Outside @hydra.main there is no runtime output dir: use the run dir Hydra would make.
        if OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False) is None:
            cfg.paths.output_dir = cfg.hydra.run.dir
    return cfg if hydra else without_hydra(cfg)


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's own config of one composed with Hydra's settings, as the job receives it."""
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def group_options(config_name: str, group: str, overrides: Sequence[str] = ()) -> list[str]:
    """The options of a config group (`experiment`'s files), in the folders `overrides` add to
    the search path too: what `glob(...)` picks from in a sweep."""
    with initialize_config_dir(
        version_base="1.3", config_dir=str(CONFIG_DIR), job_name=config_name
    ):
        loader = GlobalHydra.instance().config_loader()
        return loader.get_group_options(group, config_name=config_name, overrides=list(overrides))
