"""Parts handed to a LightningModule either built or as Hydra configs.

Configs are kept as plain containers in the module's hyperparameters, so a checkpoint
rebuilds its model with `load_from_checkpoint` and loads with `weights_only=True`.
"""

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def as_config(part: Any) -> dict | None:
    """A plain-dict copy of a config part, or None for a part given already built."""
    if isinstance(part, DictConfig):
        return OmegaConf.to_container(part, resolve=True)
    if isinstance(part, Mapping):
        return dict(part)
    return None


def build(part: Any, **kwargs) -> Any:
    """Instantiate a config part (with `kwargs` filled in); a built part passes through."""
    return instantiate(part, **kwargs) if isinstance(part, Mapping) else part


def config_hparams(**parts: Any) -> dict:
    """The hyperparameters to save: every part given as a config (or None), never a built object."""
    return {
        name: as_config(part)
        for name, part in parts.items()
        if part is None or isinstance(part, Mapping)
    }
