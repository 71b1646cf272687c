"""Thin entry points over litlab.training.tasks and litlab.data.fetch.

Each Hydra entry point composes its command line's config first (litlab.compose, no torch): a
mistake in it is refused with one line before anything is imported or written.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from litlab.config.compose import compose
from litlab.errors import LitlabError, user_errors  # noqa: F401  (the entry points' own)
from litlab.run.directory import RunDir

# As with `python -m`, a project's own modules in the working directory can be named by
# `_target_:` in its configs without installing the project.
if os.getcwd() not in sys.path:
    sys.path.append(os.getcwd())


def hydra_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as `@hydra.main` reads it (its options, then the overrides), by
    Hydra's own parser."""
    return get_args_parser().parse_args(list(argv[1:]))


def composes_elsewhere(args: argparse.Namespace) -> bool:
    """Whether the command line asks Hydra for what composes no config of litlab's, or for
    configs from a place given relative to the script (both left to Hydra)."""
    return bool(
        args.config_path or args.hydra_help or args.shell_completion or args.experimental_rerun
    )


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The command line's overrides, with its `--config-dir` as the search path entry it is
    (Hydra adds that folder to the search path where `hydra.searchpath` adds its own)."""
    overrides = list(args.overrides)
    if args.config_dir is None:
        return overrides
    folder = Path(args.config_dir).absolute()
    if not folder.is_dir():
        raise LitlabError(f"--config-dir={args.config_dir}: there is no folder {folder}")
    given = [o for o in overrides if o.startswith("hydra.searchpath=")]
    rest = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    paths = OverridesParser.create().parse_override(given[-1]).value() if given else []
    return [*rest, f"hydra.searchpath=[{','.join(map(repr, [f'file://{folder}', *paths]))}]"]


def compose_command(config_name: str, overrides: Sequence[str], hydra: bool = False) -> DictConfig:
    """The config a command line composes (see litlab.compose); a choice that does not exist or
    an override that does not apply is one LitlabError line naming what there is."""
    try:
        return compose(config_name, overrides, hydra=hydra)
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err).split("Config search path")[0]  # the choices, not the search path
        raise LitlabError(" ".join(message.split())) from err


def check_command(argv: Sequence[str], config_name: str) -> DictConfig | None:
    """Compose the config the command line asks for, refusing a mistake in it, and a run it
    names (`run_dir`, `ckpt_path`) that is none or whose config.yaml cannot be read; the
    config to run (None for a command line that composes elsewhere, a sweep, or asks for
    help)."""
    args = hydra_arguments(argv)
    if composes_elsewhere(args) or args.multirun:
        return None
    cfg = compose_command(args.config_name or config_name, overrides_of(args))
    if args.help or args.cfg or args.info:
        return None
    if "run_dir" in cfg:
        RunDir.named(cfg.run_dir, cfg.get("ckpt_path"), cfg.get("trust_run", False))
    return cfg
