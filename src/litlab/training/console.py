"""What a run prints: each message once, a short header, then the progress bar and the results.

Lightning speaks through its own handler and, under Hydra, through Hydra's too; it announces
accelerators the machine does not have, tips for products, and a layer table whose metric rows
hold no parameters. `quiet_lightning` keeps one voice and drops the noise; `RunHeader` says in
two lines what is being trained, where and how.
"""

import logging
import warnings
from typing import Annotated

import lightning
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only

from litlab.settings import PositiveInt, Range

log = logging.getLogger("litlab")

# Lightning's messages that say nothing about this run, or what the header says better.
_NOISE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "💡 Tip:",
    "Seed set to",
    "Trainer already configured with model summary",
    "Restoring states from the checkpoint path",
    "Loaded model weights from the checkpoint",
)


def _not_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_NOISE)


def quiet_lightning() -> None:
    """One voice for Lightning's messages, without its noise. Safe to call again."""
    if logging.getLogger().handlers:  # Hydra's (or the user's) handlers print them already
        logging.getLogger("lightning").removeHandler(lightning._console)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logger = logging.getLogger(name)
        if _not_noise not in logger.filters:
            logger.addFilter(_not_noise)
    # Deprecations inside Lightning, and its hint to use srun on any machine that has SLURM
    # installed (litlab's SLURM launcher starts ranks with srun itself).
    warnings.filterwarnings("ignore", message=r".*isinstance.treespec, LeafSpec")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # A resumed run's checkpoints are there by design; a fresh run into them is refused first.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


class ConsoleFormatter(logging.Formatter):
    """The message alone; a warning or an error says so first (Hydra's console handler)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class RunHeader(ModelSummary):
    """The run's header in place of Lightning's layer table: the experiment, the run directory,
    the device and precision, and the model with its parameter count.

    A ModelSummary, so that Lightning adds no table of its own; `max_depth > 0` prints Lightning's
    layer table after the header.
    """

    def __init__(
        self,
        experiment: str | None = None,
        max_depth: Annotated[int, Range(low=-1)] = 0,
        **summarize_kwargs,
    ):
        super().__init__(max_depth=max_depth, **summarize_kwargs)
        self.experiment = experiment

    def on_fit_start(self, trainer, pl_module) -> None:
        if rank_zero_only.rank == 0:
            for line in header(trainer, pl_module, self.experiment):
                log.info(line)
        super().on_fit_start(trainer, pl_module)


def header(trainer, pl_module, experiment: str | None = None) -> list[str]:
    """Two lines: what is trained where, and on what with which precision."""
    parameters = sum(p.numel() for p in pl_module.parameters())
    nets = [type(m).__name__ for m in pl_module.children() if any(True for _ in m.parameters())]
    model = type(pl_module).__name__ + (f" ({', '.join(nets)})" if nets else "")
    device = trainer.strategy.root_device.type
    if trainer.world_size > 1:
        device = f"{trainer.world_size} {device} processes"
    run = f"experiment {experiment} · " if experiment else ""
    return [
        f"{run}run {trainer.default_root_dir}",
        f"{model}: {parameters:,} parameters · {device} · precision {trainer.precision}",
    ]


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, fed every `update_every` training batches.

    The stock bar recomputes every displayed metric after each batch and redraws from a
    thread `refresh_rate` times a second; with a small net that costs as much as training.
    """

    def __init__(self, update_every: PositiveInt = 50, refresh_rate: PositiveInt = 2, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.update_every = update_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = batch_idx + 1
        if done % self.update_every == 0 or done == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
