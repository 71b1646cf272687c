"""A trial's job shows that it is alive: a callback that records Optuna heartbeats for its trial.

A search's submitter asks a trial and launches its job, which may run on another node, after
waiting in a queue; only the job knows that it still trains. So the job, not the submitter,
records the trial's heartbeat, in a thread of its own, every `interval` seconds from the start
of its training until its trial is told (or the process ends: a killed job stops beating, and a
submitter fails its trial once `grace_period` has passed, see litlab.sweeps.storage).
"""

import logging
import threading
import time

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def beat(storage, trial_id: int, interval: float) -> None:
    """Record the trial's heartbeat every `interval` seconds while it runs."""
    from optuna.trial import TrialState

    while True:
        try:
            if storage.get_trial(trial_id).state != TrialState.RUNNING:
                return  # told, or failed as stale: nothing to keep alive
            storage.record_heartbeat(trial_id)
        except Exception as err:  # noqa: BLE001  (a server away for a while: beat again later)
            log.warning("could not record the heartbeat of trial %d: %s", trial_id, err)
        time.sleep(interval)


class Heartbeat(Callback):
    """Record a heartbeat of trial number `trial` of `study_name` in `storage` (a database URL)
    every `interval` seconds, from rank 0, while the job lives and the trial runs."""

    def __init__(self, storage: str, study_name: str, trial: int, interval: int):
        self.storage, self.study_name = storage, study_name
        self.number, self.interval = trial, interval
        self.thread: threading.Thread | None = None

    @rank_zero_only
    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.thread is not None:
            return
        from optuna.trial import TrialState

        from litlab.sweeps.storage import open_storage

        try:
            storage = open_storage(self.storage)
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.number
            )
            running = storage.get_trial(trial_id).state == TrialState.RUNNING
        except Exception as err:  # noqa: BLE001  (a run resumed long after its search)
            log.warning(
                "no heartbeat for trial %d: its study cannot be read (%s)", self.number, err
            )
            return
        if not running:  # a run resumed after its trial was told
            return
        # A daemon: the beats end with the process, as they must when the job is killed.
        self.thread = threading.Thread(
            target=beat,
            args=(storage, trial_id, self.interval),
            name=f"heartbeat of trial {self.number}",
            daemon=True,
        )
        self.thread.start()
