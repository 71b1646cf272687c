"""Reading checkpoints safely: `weights_only=True`, and one clear error for a bad file."""

import re
from pathlib import Path

import torch

from litlab.errors import LitlabError, first_line


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
