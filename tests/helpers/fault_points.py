"""A callback for the fault tests: it holds a run at a known point, so that a test sends its
signal, fills its disk or exhausts its memory there, without racing the clock."""

import os
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class PauseAt(Callback):
    """After batch `batch` of epoch `epoch` (or at the start of testing, `epoch=test`): write
    `<folder>/reached`, then wait until `<folder>/go` exists (at once if it does already).
    With `allocate_mb`, hold that much more memory from there on instead of waiting (the
    first time only: not in the run resumed)."""

    def __init__(self, folder: str, epoch: int | str, batch: int = 1, allocate_mb: int = 0):
        self.folder, self.epoch, self.batch = Path(folder), epoch, batch
        self.allocate_mb = allocate_mb
        self.held = []

    def _reached(self) -> None:
        again = (self.folder / "reached").exists()  # a resumed run
        (self.folder / "reached").write_text(str(os.getpid()))
        if self.allocate_mb:
            if not again:
                self.held.append(torch.ones(self.allocate_mb * 2**18))  # float32: 4 bytes each
            return
        while not (self.folder / "go").exists():
            time.sleep(0.01)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx + 1) == (self.epoch, self.batch):
            self._reached()

    def on_test_start(self, trainer, pl_module) -> None:
        if self.epoch == "test":
            self._reached()
