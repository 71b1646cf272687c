"""Callbacks litlab adds to Lightning's."""

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, fed every `update_every` training batches.

    The stock bar recomputes every displayed metric after each batch and redraws from a
    thread `refresh_rate` times a second; with a small net that costs as much as training.
    """

    def __init__(self, update_every: int = 50, refresh_rate: int = 2, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.update_every = update_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = batch_idx + 1
        if done % self.update_every == 0 or done == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
