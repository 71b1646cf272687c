"""litlab: classic neural network architectures as composable Lightning + Hydra experiments."""

from pathlib import Path

from litlab.errors import LitlabError

__version__ = "0.1.0"

# The Hydra configs: the repository's top-level conf/, which a built package holds as
# litlab/conf; an editable install reads the checkout's own.
_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parents[1] / "conf"
# The checkout an editable install runs from (None for a built package): its data/ is where
# litlab looks for data a project folder does not hold.
CHECKOUT = None if (_PACKAGE / "conf").is_dir() else _PACKAGE.parents[1]

__all__ = [
    "CONFIG_DIR",
    "LitlabError",
    "__version__",
    "compose",
    "evaluate",
    "load_run",
    "train",
]


def __getattr__(name: str):
    # Imported on first use, so `litlab.nets` alone pulls in neither Lightning nor Hydra.
    if name == "compose":
        from litlab.config.compose import compose

        return compose
    if name == "train":
        from litlab.training.tasks import train

        return train
    if name in ("evaluate", "load_run"):
        from litlab.inference import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'litlab' has no attribute {name!r}")
