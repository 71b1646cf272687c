"""Which way a metric improves, decided here alone: checkpointing and early stopping
(`monitor_mode`), the best value a model tracks (`val/<name>_best`), the pretraining stage, an
Optuna search's direction and litlab-report's ranking all read `mode`."""

from typing import Literal

# Every metric litlab logs whose name holds one of these is lower-is-better (losses,
# reconstruction error, KL divergence); the rest (accuracy, log-likelihood) higher-is-better.
MINIMIZED = ("loss", "recon", "kl")


def mode(metric: str) -> Literal["min", "max"]:
    """ "min" or "max": which way `metric` (e.g. val/acc, val/loss_best, test/log_prob) improves."""
    name = metric.rsplit("/", 1)[-1]
    return "min" if any(term in name for term in MINIMIZED) else "max"


def direction(metric: str) -> Literal["minimize", "maximize"]:
    """The same, in Optuna's words."""
    return "minimize" if mode(metric) == "min" else "maximize"
