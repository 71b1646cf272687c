"""A callback that tests put into a run to make it reach a known step and stay there, so that
what they do to it (a signal, a time limit, another job starting) happens mid-run on any
machine, loaded or idle, rather than racing the clock. Jobs import it as `tests.events` from
the checkout their command runs in:

    hold(step=30, reached=<file>[, until=<file>])   # the overrides
"""

import os
import time
from pathlib import Path

from lightning.pytorch import Callback


class HoldAtStep(Callback):
    """Before training step `step` of a run's first start (a resumed run goes on), rank 0
    writes its process id to the file `reached`, then holds until the file `until` exists, or,
    without one, until a signal's handler ends the process. Other ranks wait for it in their
    next collective. `give_up_s`: go on after that long, so that a test whose event never
    comes fails on its assertions rather than by its timeout."""

    def __init__(
        self, step: int, reached: str, until: str | None = None, give_up_s: float | None = None
    ):
        self.step, self.reached, self.until = step, Path(reached), until and Path(until)
        self.give_up_s = give_up_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step or trainer.ckpt_path or not trainer.is_global_zero:
            return
        self.reached.write_text(str(os.getpid()))
        started = time.monotonic()
        while not (self.until and self.until.exists()):
            if self.give_up_s is not None and time.monotonic() - started > self.give_up_s:
                return
            time.sleep(0.05)


def hold(step: int, reached: Path, until: Path | None = None, give_up_s=None) -> list[str]:
    """The overrides that put HoldAtStep into a run (its job processes run in this checkout)."""
    overrides = [
        "trust_run=true",  # these runs name this module of the tests': a rerun over them trusts it
        "+callbacks.hold._target_=tests.events.HoldAtStep",
        f"+callbacks.hold.step={step}",
        f"+callbacks.hold.reached={reached}",
    ]
    overrides += [f"+callbacks.hold.until={until}"] if until else []
    return overrides + ([f"+callbacks.hold.give_up_s={give_up_s}"] if give_up_s else [])


def held(reached: Path) -> int | None:
    """The process holding, once it has said so in `reached`."""
    text = reached.read_text() if reached.is_file() else ""
    return int(text) if text.strip() else None
