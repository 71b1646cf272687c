"""Checkpoints read safely (`weights_only=True`), written whole or not at all, and holding the
random states a resumed run needs."""

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from litlab.errors import LitlabError, first_line
from litlab.files import replacing
from litlab.run.directory import reroot


def load_checkpoint(path: str | Path) -> dict:
    """Load a Lightning checkpoint without executing anything (`weights_only=True`)."""
    if not Path(path).is_file():
        raise LitlabError(f"no checkpoint at {path}; pass the path of an existing .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError ...
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = (
            f"it would load {refused.group(1)}, which weights-only loading refuses"
            if refused
            else first_line(err)
        )
        raise LitlabError(f"{path} is not a loadable checkpoint ({reason})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LitlabError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_fits(model: torch.nn.Module, state: dict, ckpt_path, model_cfg: DictConfig) -> None:
    """Refuse a checkpoint whose weights are not those of `model` (same names and shapes), the
    model `model_cfg` describes."""
    expected = model.state_dict()
    wrong = sorted(set(state) ^ set(expected)) or [
        k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        net = OmegaConf.select(model_cfg, "net._target_", default=model_cfg.get("_target_"))
        raise LitlabError(
            f"{ckpt_path} holds a different model than the run's {net} "
            f"(first mismatch: {wrong[0]}); pass a checkpoint written by that run"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-safe: a process killed while saving leaves the
    previous `last.ckpt` intact, never a truncated one.

    Lightning stages the bytes in the system temp directory, which may be another file system
    (then the final move is a copy) and is never fsynced; here they go to a temporary file
    beside the target, reach the disk, and replace it in one rename.

    A checkpoint read from another folder than the one it was written in (its run copied or
    moved) speaks of the checkpoints beside it now: a resumed copy tracks, replaces and
    deletes its own best checkpoints, never the original's.
    """

    def load_checkpoint(self, path, *args, **kwargs) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(path, *args, **kwargs)
        here = Path(path).resolve().parent  # as ModelCheckpoint resolves its dirpath
        callbacks = checkpoint.get("callbacks", {})
        for key, state in callbacks.items():
            if isinstance(state, dict) and isinstance(state.get("dirpath"), str):
                callbacks[key] = reroot(state, state["dirpath"], here)
        return checkpoint

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a killed save
            stale.unlink(missing_ok=True)
        with replacing(path) as f:
            torch.save(checkpoint, f)


class RandomState(Callback):
    """Keeps the random number generators in checkpoints, which Lightning does not.

    A run resumed from a checkpoint then shuffles its batches and draws its dropout masks as
    the uninterrupted run would have: the states are put back when the checkpoint is restored,
    and Lightning's sanity check in between leaves them alone. Only plain types are stored, so
    `weights_only` loading accepts them.
    """

    def state_dict(self) -> dict:
        version, words, gauss = random.getstate()
        _, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": [version, list(words), gauss],
            "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        version, words, gauss = state["python"]
        random.setstate((version, tuple(words), gauss))
        keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
