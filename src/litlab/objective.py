"""Which way a metric improves, decided here alone: checkpointing and early stopping
(`monitor_mode`), the best value a model tracks (`val/<name>_best`), the pretraining stage, an
Optuna search's direction and litlab-report's ranking all read `mode`."""

from typing import Literal

# The number of a model's parameters, which every litlab model logs (an objective of a search
# that weighs accuracy against size).
PARAMETERS = "model/params"
# Every metric litlab logs whose name holds one of these is lower-is-better (losses,
# reconstruction error, KL divergence, parameters); the rest (accuracy, log-likelihood)
# higher-is-better.
MINIMIZED = ("loss", "recon", "kl", "params")


def mode(metric: str) -> Literal["min", "max"]:
    """ "min" or "max": which way `metric` (e.g. val/acc, val/loss_best, test/log_prob) improves."""
    name = metric.rsplit("/", 1)[-1]
    return "min" if any(term in name for term in MINIMIZED) else "max"


def direction(metric):
    """The same, in Optuna's words: "minimize" or "maximize", or a list of them for a list of
    metrics (the objectives of a multi-objective search)."""
    if not isinstance(metric, str):
        return [direction(name) for name in metric]
    return "minimize" if mode(metric) == "min" else "maximize"


def objectives(optimized_metric) -> list[str]:
    """The metrics a search optimizes: `optimized_metric`, one name or a list of them."""
    if optimized_metric is None:
        return []
    if isinstance(optimized_metric, str):
        return [optimized_metric]
    return [str(name) for name in optimized_metric]
