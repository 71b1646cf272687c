"""litlab: classic neural network architectures as composable Lightning + Hydra experiments."""

from pathlib import Path

from litlab.errors import LitlabError

__version__ = "0.1.0"

# The Hydra configs live at the repository top level, next to src/.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"

from litlab.api import compose  # noqa: E402
from litlab.tasks import evaluate, train  # noqa: E402

__all__ = ["CONFIG_DIR", "LitlabError", "__version__", "compose", "evaluate", "train"]
