"""When the machine stops a run: a full disk (any failed write), Ctrl-C and SIGTERM each end it in
one line that says what the run keeps and how to continue it.

- A write that fails (`OSError`, also one torch's checkpoint writer wraps in a RuntimeError) is
  one `error:` line naming the file, the free space there and the checkpoint kept; the atomic
  writes (`litlab.files.replacing`) leave every earlier file whole.
- Ctrl-C and SIGTERM stop at the end of the batch being trained, through Lightning's own
  SIGTERM path (the one a SLURM preemption takes): the epoch is cut short, its state saved to
  `checkpoints/interrupted.ckpt`, and `last.ckpt` keeps the end of the last whole epoch, which
  `resume=auto` trains on from, to the metrics of an uninterrupted run. Exit status 130 for
  Ctrl-C, 143 for SIGTERM. A second Ctrl-C stops at once; a run that has not stopped
  `GRACE_S` seconds after the signal stops then (a preempting VM kills some 30 s after).
- Under SLURM, preemption and time limits keep their own path (litlab.sweeps.slurm).
"""

import json
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from litlab.errors import LitlabError
from litlab.files import atomic_write, failed_write, human_size
from litlab.run.directory import RunDir
from litlab.run.resume import rescheduled
from litlab.run.supervisor import note_run

GRACE_S = 10  # from the signal to the exit, at the latest
INTERRUPTED = "interrupted.ckpt"  # the state where a stopped epoch was cut short
# The metrics a fit ended with: a run resumed after it (its metrics.json lost to a full disk)
# trains nothing more, and reports them again.
FIT_METRICS = "fit_metrics.json"
_EXIT = {"Ctrl-C": 130, "SIGTERM": 143}  # 128 + the signal's number, as a shell reports it


class _Stop:
    """What this process was asked to stop by, and where its training then was."""

    reason: str | None = None
    trainer = None  # the Trainer fitting now: Lightning's SIGTERM handler is in place
    at: tuple[int, int] | None = None  # (epoch, batches of it trained) when it stopped
    saved: Path | None = None
    deadline: threading.Timer | None = None


def free_space(path: Path) -> int:
    """Bytes free on the file system that holds `path` (or its nearest existing folder)."""
    for place in (path, *path.parents):
        if place.exists():
            return shutil.disk_usage(place).free
    return 0


def kept(run: RunDir) -> str:
    """What the run keeps to continue from: its last.ckpt and the epoch that ends."""
    if not run.last.is_file():
        return "no checkpoint yet"
    try:
        epoch = torch.load(run.last, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    except Exception:  # written by another version: say only that it is there
        return f"{run.last} is kept"
    return f"{run.last} from epoch {epoch} is kept"


def sweep_dir() -> str | None:
    """The directory of the sweep this job is one of; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    job = HydraConfig.get() if HydraConfig.initialized() else None
    return str(job.sweep.dir) if job is not None and job.mode == RunMode.MULTIRUN else None


def continue_command(run: RunDir, sweep: str | None = None) -> str:
    """The command that continues this run (or the sweep `sweep`) from its last.ckpt."""
    if sweep is not None:
        given = sys.argv[1:]
        argv = [a for a in given if not a.startswith(("hydra.sweep.dir=", "resume="))]
        return " ".join(["litlab-train", *argv, f"resume=auto_or_fresh hydra.sweep.dir={sweep}"])
    resume = "auto" if run.last.is_file() else "auto_or_fresh"
    return f"litlab-train resume={resume} hydra.run.dir={run.path}"


def write_error(err: OSError, run: RunDir) -> LitlabError:
    """One line for a write that failed: the file, why, the free space there, what is kept."""
    path = Path(err.filename) if err.filename else run.path
    why = err.strerror or type(err).__name__
    return LitlabError(
        f"could not write {path}: {why} ({human_size(free_space(path))} free there); {kept(run)}; "
        f"make room, then continue with: {continue_command(run, sweep_dir())}"
    )


def _stopped_line(run: RunDir) -> str:
    where = "before training"
    if _Stop.at:
        epoch, batches = _Stop.at
        where = f"in epoch {epoch} after {batches} batch{'es' if batches != 1 else ''}"
    saved = f" (the cut epoch is in {_Stop.saved})" if _Stop.saved else ""
    return (
        f"stopped by {_Stop.reason} {where}; {kept(run)}{saved}; continue with: "
        f"{continue_command(run, sweep_dir())}"
    )


def _say(line: str) -> None:
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":  # one line, not a rank's
        print(f"\n{line}", file=sys.stderr, flush=True)


class Stopped(BaseException):
    """A signal outside of fitting: stop where the run is (as KeyboardInterrupt does)."""


def _handler(reason: str, run: RunDir):
    def handle(signum, frame) -> None:
        if _Stop.reason is not None:  # asked again
            if reason == "Ctrl-C":
                _say(_stopped_line(run).replace(" in epoch", " at once, in epoch", 1))
                os._exit(_EXIT[reason])
            return
        _Stop.reason = reason
        _Stop.deadline = threading.Timer(GRACE_S, _give_up, (run,))
        _Stop.deadline.daemon = True
        _Stop.deadline.start()
        if _Stop.trainer is None:
            raise Stopped(reason)
        if reason == "Ctrl-C":  # stop as on SIGTERM: Lightning's handler is in place
            os.kill(os.getpid(), signal.SIGTERM)

    return handle


def _give_up(run: RunDir) -> None:
    _say(_stopped_line(run).replace(" in epoch", f" (not stopped after {GRACE_S} s) in epoch", 1))
    os._exit(_EXIT[_Stop.reason])


@contextmanager
def faults_handled(run_dir: str | Path):
    """Around a run of `litlab-train`: Ctrl-C and SIGTERM stop it as the module says, a failed
    write is a LitlabError naming the file, the free space and the checkpoint kept."""
    run = RunDir(run_dir)
    note_run(run.path, sweep_dir())
    scheduled = "SLURM_JOB_ID" in os.environ or rescheduled()  # preemption has its own path
    ours = threading.current_thread() is threading.main_thread() and not scheduled
    before = {}
    if ours:
        _Stop.reason, _Stop.at, _Stop.saved, _Stop.deadline = None, None, None, None
        for signum, reason in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
            before[signum] = signal.signal(signum, _handler(reason, run))
    try:
        yield
    except (SystemExit, Stopped):  # Lightning's SIGTERMException is a SystemExit
        if not ours or _Stop.reason is None:
            raise
        _say(_stopped_line(run))
        sys.exit(_EXIT[_Stop.reason])
    except Exception as err:
        failed = failed_write(err)
        if failed is None:
            raise
        raise write_error(failed, run) from err
    finally:
        if _Stop.deadline is not None:
            _Stop.deadline.cancel()
        for signum, handler in before.items():
            signal.signal(signum, handler)


class Interruption(Callback):
    """Lets a signal stop the fit at the end of a batch (see `faults_handled`), and saves the
    cut epoch's state to `checkpoints/interrupted.ckpt` when it does."""

    def on_fit_start(self, trainer, pl_module) -> None:
        _Stop.trainer, _Stop.at = trainer, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _Stop.at = (trainer.current_epoch, batch_idx + 1)

    def on_fit_end(self, trainer, pl_module) -> None:
        _Stop.trainer = None
        folder = Path(trainer.default_root_dir) / "checkpoints"
        fitted = folder / FIT_METRICS
        if _Stop.at is None and fitted.is_file():  # resumed where there was nothing to train
            record = json.loads(fitted.read_text())
            if record["global_step"] == trainer.global_step:
                metrics = trainer.callback_metrics
                metrics.update({k: torch.tensor(v) for k, v in record["metrics"].items()})
        elif trainer.is_global_zero and _Stop.at is not None and folder.is_dir():
            metrics = {
                name: float(value)
                for name, value in trainer.callback_metrics.items()
                if torch.as_tensor(value).numel() == 1
            }
            record = {"global_step": trainer.global_step, "metrics": metrics}
            atomic_write(fitted, json.dumps(record, indent=2) + "\n")
            (folder / INTERRUPTED).unlink(missing_ok=True)  # its epoch is trained again by now

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        _Stop.trainer = None
        if _Stop.reason is None or not isinstance(exception, SystemExit) or _Stop.at is None:
            return
        path = Path(trainer.default_root_dir) / "checkpoints" / INTERRUPTED
        try:
            trainer.save_checkpoint(path, weights_only=False)  # all of it, as last.ckpt
        except Exception as err:  # a full disk too: the run still stops, with its last.ckpt
            if failed_write(err) is None:
                raise
        else:
            _Stop.saved = path
