"""A trial's side of pruning: a callback that reports to the Optuna study and stops the run."""

import logging
from contextlib import contextmanager

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from litlab.files import failed_write
from litlab.sweeps.storage import journal_file, sqlite_file

log = logging.getLogger(__name__)


@contextmanager
def naming_the_storage(storage: str):
    """A write to the study that fails (a full disk) names the study's database file."""
    try:
        yield
    except Exception as err:
        failed = failed_write(err)
        if failed is None:
            raise
        study_file = sqlite_file(storage) or journal_file(storage) or storage
        failed.filename = failed.filename or str(study_file)
        raise failed from err


class Pruning(Callback):
    """Report `metric` after each validation epoch to trial number `trial` of the Optuna study
    `study_name` in `storage`, and stop training when the study's `pruner` (a name, see
    litlab.sweeps.studies.make_pruner) says so: the run ends as a finished one, with `pruned` set.

    The storage is the only link to the search, so this works wherever the job runs. A job
    whose trial has already ended (a run resumed after its search) reports nothing.
    """

    def __init__(self, storage: str, study_name: str, trial: int, pruner: str, metric: str):
        self.storage, self.study_name, self.number = storage, study_name, trial
        self.pruner, self.metric = pruner, metric
        self.trial = None  # the Optuna trial, while it runs
        self.pruned = False

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module) -> None:
        import optuna

        from litlab.sweeps.storage import open_storage
        from litlab.sweeps.studies import make_pruner

        storage = open_storage(self.storage)
        study = optuna.load_study(
            study_name=self.study_name,
            storage=storage,
            pruner=make_pruner(self.pruner, trainer.max_epochs),
        )
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), self.number
        )
        if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        epochs = trainer.current_epoch + 1  # the trial's step: the epochs it has trained
        value = trainer.callback_metrics.get(self.metric)
        prune = False
        if self.trial is not None and value is not None:  # rank 0 speaks to the study
            with naming_the_storage(self.storage):
                self.trial.report(float(value), epochs)
                prune = self.trial.should_prune()
        if trainer.strategy.reduce_boolean_decision(prune, all=False):  # every rank stops
            if trainer.is_global_zero:
                log.info("pruned by the %s pruner after %d epochs", self.pruner, epochs)
            self.pruned = trainer.should_stop = True
