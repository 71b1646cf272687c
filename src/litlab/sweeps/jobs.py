"""A job of a sweep that fails is one failed job: its `error:` line in its log and the sweep's,
`error.txt` in its directory (that line, and the traceback of what was no user mistake), a
`failed` status in litlab-report; the next jobs run, and the sweep ends with exit status 1.
No process of a job outlives it.

Lightning's DDP launcher starts ranks 1..n-1 as child processes of the one that runs the job,
and a thread of its own ends them all, and that process too, as soon as one of them fails. In
a sweep that process is the submitter, which would take every job after it down: here the
thread ends the ranks only, and rank 0, cut off from them, fails its job.
"""

import logging
import subprocess
import threading
import traceback
from contextlib import contextmanager, suppress
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, HydraException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from litlab.errors import LitlabError, message, user_errors
from litlab.run.directory import RunDir

log = logging.getLogger(__name__)

# How long the rank processes of a finished job may take to exit before they are ended.
RANK_EXIT_S = 60


class JobFailed(CompactHydraException):
    """A job of a sweep failed; Hydra prints this one line when the sweep ends, exit status 1.
    `reason`: the job's own error line."""

    def __init__(self, line: str, reason: str = ""):
        super().__init__(line, reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]


@contextmanager
def job_errors():
    """Around one job: for a single run, a user mistake is one `error:` line and exit status 2
    (litlab.errors.user_errors); in a sweep, any failure fails this job only."""
    job = HydraConfig.get()
    if job.mode != RunMode.MULTIRUN:
        with user_errors():
            yield
        return
    _spare_the_submitter()
    ranks_before = set(_rank_observers())
    ended = "failed"
    try:
        yield
        ended = "finished"
    except Exception as err:
        line = message(err)
        mistake = isinstance(err, LitlabError | HydraException | OmegaConfBaseException)
        log.error("%s", line)
        # A mistake is its line; anything else also keeps its traceback, for a bug report.
        trace = "" if mistake else "".join(traceback.format_exception(err))
        RunDir(job.runtime.output_dir).write_failure(line, trace)
        log_file = Path(job.runtime.output_dir) / f"{job.job.name}.log"
        failed = f"error: job {job.job.num} failed: {line} (its log: {log_file})"
        raise JobFailed(failed, line) from None
    finally:
        for observer in set(_rank_observers()) - ranks_before:
            _end(observer._child_processes, failed=ended == "failed")


def _rank_observers() -> list[threading.Thread]:
    """Lightning's threads that watch the rank processes this process started."""
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    return [t for t in threading.enumerate() if isinstance(t, _ChildProcessObserver)]


def _end(processes: list, failed: bool) -> None:
    """Reap the rank processes of a job that has ended: those of a finished job end by
    themselves (given a minute), those of a failed one are killed."""
    for process in processes:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0 if failed else RANK_EXIT_S)
        if process.poll() is None:
            process.kill()
            process.wait()


def _spare_the_submitter() -> None:
    """Let Lightning's rank watcher end the ranks it watches, not the process it runs in."""
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    def end_the_ranks(observer: _ChildProcessObserver) -> None:
        for process in observer._child_processes:
            process.send_signal(observer._termination_signal)

    _ChildProcessObserver._terminate_all = end_the_ranks
