"""An Optuna search that outlives its submitting process: the study lives in a storage (by
default `<sweep>/optuna.db`), and rerunning the search with `hydra.sweep.dir=<that sweep>`
continues it. Trial N's job is always `<sweep>/N`; a rerun first tells the study what the jobs
of an earlier, killed submitter reached (their metrics.json), then numbers its own jobs after the
study's trials, so that no job directory is reused."""

import logging
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper

from litlab.rundir import RunDir

log = logging.getLogger(__name__)


def settle(study, sweep_dir: Path, metric: str) -> None:
    """Tell an Optuna `study` the results of its trials still marked running, from their job
    directories; a trial whose job left none counts as failed."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job = RunDir(sweep_dir / str(trial.number))
        value = job.metrics().get(metric)
        if value is None:
            log.warning("trial %d left no %s in %s: failed", trial.number, metric, job.metrics_file)
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            study.tell(trial.number, value)


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        import optuna  # here: Hydra imports every plugin module at each start

        search = self.sweeper
        sweep_dir = Path(search.config.hydra.sweep.dir)
        if isinstance(search.storage, str):
            if search.storage.startswith("sqlite:///"):
                Path(search.storage.removeprefix("sqlite:///")).parent.mkdir(
                    parents=True, exist_ok=True
                )
            # Optuna 2 (which hydra-optuna-sweeper takes) writes a new storage's schema version
            # through a connection SQLAlchemy 2 never commits; committing each statement works.
            search.storage = optuna.storages.RDBStorage(
                search.storage, engine_kwargs={"isolation_level": "AUTOCOMMIT"}
            )
        if search.storage is not None:
            try:
                study = optuna.load_study(study_name=search.study_name, storage=search.storage)
            except KeyError:  # a new study
                pass
            else:
                settle(study, sweep_dir, search.config.optimized_metric)
                search.job_idx = len(study.trials)
        return super().sweep(arguments)
