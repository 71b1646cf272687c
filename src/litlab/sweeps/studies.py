"""litlab's Optuna search (`hparams_search=...`, `hydra/sweeper=optuna`): a Hydra sweeper on
Optuna's ask-and-tell.

The study lives in a storage (by default the journal `<sweep>/optuna.journal`, see
litlab.sweeps.storage), and rerunning the search with
`hydra.sweep.dir=<that sweep>` continues it. Trial N's job is always `<sweep>/N`: a rerun first
tells the study what the jobs of an earlier, killed submitter reached (their metrics.json), and
its own trials are numbered after the study's, so that no job directory is reused.

With a launcher that runs jobs elsewhere (joblib, slurm), `n_jobs` trials are in flight at
once: a new trial is asked for as soon as any one ends (`batch_synchronous: true` waits for the
whole batch instead, as Hydra's sweepers do). Each trial is told to the study when its job ends.

With a pruner, each job reports its `optimized_metric` to its trial after every epoch through
the storage (litlab.sweeps.pruning.Pruning), and stops early when the pruner says so; its
metrics.json says `"pruned": true`, and the trial is told as pruned.

The search space is read as hydra-optuna-sweeper reads it (litlab.sweeps.space), its settings are
checked before anything is written (litlab.sweeps.settings), and `optimization_results.yaml`
holds the values each job's own config ran with: the best trial's, or for several objectives
(`optimized_metric` a list) the Pareto front's.

Optuna is imported only once a search starts: Hydra imports every plugin module at each start.
"""

import logging
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from litlab.errors import LitlabError, user_errors
from litlab.files import failed_write
from litlab.objective import objectives
from litlab.run.directory import RunDir
from litlab.run.supervisor import read_killed
from litlab.sweeps.jobs import JobFailed
from litlab.sweeps.settings import check_sweeper, directions, make_sampler
from litlab.sweeps.space import grid_size, load_function
from litlab.sweeps.storage import (
    check_storage,
    fail_stale_trials,
    journal_file,
    open_storage,
    sqlite_file,
)

log = logging.getLogger(__name__)

PRUNERS = ("median", "successive_halving", "hyperband")  # hydra.sweeper.pruner's, besides null


def make_pruner(name: str | None, max_epochs: int | None = None):
    """The Optuna pruner `name` stands for; a trial's steps are the epochs it has trained.
    `median` stops a trial whose value is worse than the median of earlier trials' after as
    many epochs (once 2 trials have finished); `successive_halving` keeps the best third of the
    trials after 1 epoch, of those after 3, 9, ...; `hyperband` runs successive halving in
    brackets that start at 1 to `max_epochs` epochs."""
    import optuna

    if name is None:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(max_resource=max_epochs or "auto")
    raise LitlabError(
        f"hydra.sweeper.pruner={name} is not a pruner; use one of {', '.join(PRUNERS)}, or null"
    )


def check_search(pruner: str | None, storage: str | None) -> None:
    """Refuse a search that cannot run, before anything is written."""
    if pruner is not None and pruner not in PRUNERS:
        make_pruner(pruner)  # names the pruners there are
    if pruner is not None and storage is None:
        raise LitlabError(
            f"hydra.sweeper.pruner={pruner} needs a storage that the jobs reach; set "
            "hydra.sweeper.storage=${hydra.sweep.dir}/optuna.journal"
        )
    check_storage(storage)


def outcome(job_dir: Path, metrics: list[str]) -> tuple[str, list[float] | None]:
    """What a trial's job reached, from its metrics.json: ("COMPLETE", the values of `metrics`),
    ("PRUNED", None), or ("FAIL", None) for a job that left one of them out."""
    job = RunDir(job_dir)
    if job.pruned():
        return "PRUNED", None
    reached = job.metrics()
    missing = [metric for metric in metrics if reached.get(metric) is None]
    if missing:
        log.warning("trial %s left no %s in %s: failed", job_dir.name, missing[0], job.metrics_file)
        return "FAIL", None
    return "COMPLETE", [reached[metric] for metric in metrics]


def tell(study, number: int, job_dir: Path, metrics: list[str]) -> str:
    """Tell the study how trial `number` ended; its state's name."""
    from optuna.trial import TrialState

    state, values = outcome(job_dir, metrics)
    try:  # another submitter of the study may have told it first, or failed it as stale
        study.tell(number, values, state=TrialState[state], skip_if_finished=True)
    except RuntimeError as err:  # the grid sampler stops a study once its grid is done
        if "Study.stop" not in str(err):
            raise
    return state


def settle(study, sweep_dir: Path, metrics: list[str]) -> None:
    """Tell an Optuna `study` the results of its trials still marked running whose jobs have
    ended (those of a submitter that was stopped): finished (metrics.json), failed (error.txt)
    or killed (killed.json). A job still running may be another submitter's, which tells it;
    one that died unseen is failed by its heartbeat, where there is one."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job = RunDir(sweep_dir / str(trial.number))
        if job.metrics_file.is_file():
            tell(study, trial.number, job.path, metrics)
        elif job.failure() is not None or read_killed(job.path):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def failure_line(error: BaseException) -> str:
    """What a failed job's error says, in one line: its `error:` line where it printed one."""
    seen = error
    while seen is not None:  # litlab's refusal, raised from within the job
        if isinstance(seen, LitlabError):
            return f"error: {seen}"
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    said = [line.strip() for line in text.splitlines() if line.strip().startswith("error:")]
    if said:  # a job in another process printed it (submitit, slurm)
        return said[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def ran_with(job_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The values a trial's job ran with for the keys Optuna sampled, read from the job's own
    config (a config group's: the option Hydra chose); `params` where the job wrote none."""
    job = RunDir(job_dir)
    if not job.config_file.is_file():
        return dict(params)
    config = job.config(trust=True)  # this search's own job: checked when the search began
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.is_file() else {}
    values = {}
    for key, sampled in params.items():
        name = key.lstrip("+~")
        value = OmegaConf.select(config, name, default=sampled)
        if OmegaConf.is_config(value):  # a config group
            value = choices.get(name, sampled)
        if value != sampled:
            log.warning(
                "trial %s ran with %s=%s, not the %s sampled", job_dir.name, key, value, sampled
            )
        values[key] = value
    return values


def trial_callback(cfg: DictConfig, hydra_cfg: DictConfig) -> DictConfig:
    """A job's config with the callbacks that report to its Optuna trial, when the job is a
    trial of a search with a pruner or a heartbeat (trial N is job N); else `cfg` as it is."""
    search = hydra_cfg.sweeper
    beats, prunes = search.get("heartbeat_interval"), search.get("pruner")
    if hydra_cfg.mode != RunMode.MULTIRUN or (beats is None and prunes is None):
        return cfg  # Hydra's own sweeper has neither
    trial = {"storage": search.storage, "study_name": search.study_name, "trial": hydra_cfg.job.num}
    callbacks = {}
    if beats is not None:
        callbacks["heartbeat"] = {
            "_target_": "litlab.sweeps.heartbeat.Heartbeat",
            **trial,
            "interval": beats,
        }
    if prunes is not None:
        callbacks["pruning"] = {
            "_target_": "litlab.sweeps.pruning.Pruning",
            **trial,
            "pruner": prunes,
            "metric": cfg.optimized_metric,
        }
    with open_dict(cfg):
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks.update(callbacks)
    return cfg


@contextmanager
def study_writes(storage: str | None, sweep_dir: str):
    """A write to the study's storage that fails (a full disk) is one LitlabError naming the
    file, its free space, and the command that continues the search."""
    try:
        yield
    except Exception as err:
        failed = failed_write(err)
        if failed is None:
            raise
        from litlab.files import human_size
        from litlab.run.faults import continue_command, free_space

        path = Path(failed.filename or sqlite_file(storage) or journal_file(storage) or sweep_dir)
        raise LitlabError(
            f"could not write {path}: {failed.strerror} ({human_size(free_space(path))} free "
            "there); the study keeps the trials told so far; make room, then continue with: "
            f"{continue_command(RunDir(sweep_dir), sweep_dir)}"
        ) from err


class _Inline:
    """An executor that runs each call at once, in this thread (for jobs the launcher runs in
    this process, one after another)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, fn, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001  (as a pool would keep it)
            future.set_exception(err)
        return future


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        pruner: str | None = None,
        batch_synchronous: bool = False,
        max_failure_rate: float = 0.0,
        custom_search_space: str | None = None,
        params: DictConfig | None = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        max_retry: int | None = 1,
    ) -> None:
        self.sampler = sampler  # its config: made once the search space is known
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.pruner = pruner
        self.batch_synchronous = batch_synchronous
        self.max_failure_rate = max_failure_rate
        self.custom_search_space = custom_search_space
        self.params = params or {}
        self.heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "max_retry": max_retry,
        }

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        with user_errors():
            check_sweeper(config)
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def parallel(self) -> int:
        """How many trials run at once: `n_jobs` with a launcher that runs jobs in other
        processes; one with Hydra's basic launcher, which runs them in this one."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        return 1 if isinstance(self.launcher, BasicLauncher) else max(self.n_jobs, 1)

    def open_study(self, wanted: list[str]):
        """The study in `storage` named `study_name`, made where there is none. Without a
        name, the storage's one study continues (a rerun of the search), or a new one is made."""
        import optuna

        storage = open_storage(self.storage, **self.heartbeat) if self.storage else None
        name = self.study_name
        if name is None and storage is not None:
            existing = optuna.get_all_study_names(storage)
            if len(existing) > 1:
                raise LitlabError(
                    f"hydra.sweeper.storage={self.storage} holds the studies "
                    f"{', '.join(existing)}; "
                    "name the one to continue with hydra.sweeper.study_name=<name>"
                )
            name = existing[0] if existing else None
        study = optuna.create_study(
            study_name=name, storage=storage, directions=wanted, load_if_exists=True
        )
        if [d.name.lower() for d in study.directions] != wanted:
            raise LitlabError(
                f"study {study.study_name} in {self.storage} has the directions "
                f"{[d.name.lower() for d in study.directions]}, not {wanted}; name another "
                "study with hydra.sweeper.study_name=<name>"
            )
        return study

    def sweep(self, arguments: list[str]) -> None:
        with user_errors(), study_writes(self.storage, self.config.hydra.sweep.dir):
            self.search(arguments)

    def search(self, arguments: list[str]) -> None:
        import optuna

        with user_errors():
            space = check_sweeper(self.config, arguments)
            wanted = directions(self.direction)
            sampler = make_sampler(self.sampler, space, wanted)
            study = self.open_study(wanted)
        study.sampler = sampler
        sweep_dir = Path(self.config.hydra.sweep.dir)
        metrics = objectives(self.config.optimized_metric)
        settle(study, sweep_dir, metrics)
        if study.trials:  # a seeded sampler would draw its first trials' params again
            study.sampler.reseed_rng()
        log.info("study %s: %d trials so far", study.study_name, len(study.trials))
        n_trials = self.n_trials
        if isinstance(sampler, optuna.samplers.GridSampler):
            n_trials = min(n_trials, grid_size(space.distributions))
        custom = load_function(self.custom_search_space) if self.custom_search_space else None
        # Jobs find their study by name (pruning), also where Optuna named it.
        named = [] if self.study_name else [f"hydra.sweeper.study_name={study.study_name}"]

        def ask():
            fail_stale_trials(study)  # a killed job's trial is asked again
            trial = study.ask(space.distributions)
            for key, value in space.fixed.items():
                trial.set_user_attr(key, value)
            if custom is not None:
                custom(self.config, trial)
                overlap = sorted(trial.params.keys() & space.fixed.keys())
                if overlap:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    raise LitlabError(
                        f"{self.custom_search_space} samples {overlap[0]}, which the command "
                        "line fixes; leave it to one of them"
                    )
            return trial

        def launch(trial) -> None:
            overrides = [*space.job_overrides(trial.params), *named]
            (ret,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            ret.return_value  # noqa: B018  (raises the job's error)

        slots = self.parallel()
        until = ALL_COMPLETED if self.batch_synchronous else FIRST_COMPLETED
        asked, failures = 0, Failures(self.max_failure_rate, max(self.n_jobs, 1))
        running: dict[Future, int] = {}  # each job in flight, and its trial's number
        with ThreadPoolExecutor(slots) if slots > 1 else _Inline() as pool:
            while running or (asked < n_trials and not failures.too_many):
                while asked < n_trials and len(running) < slots and not failures.too_many:
                    with user_errors():
                        trial = ask()
                    running[pool.submit(launch, trial)] = trial.number
                    asked += 1
                done, _ = wait(running, return_when=until)
                for future in sorted(done, key=running.get):
                    number = running.pop(future)
                    error = future.exception()
                    if error is None:
                        tell(study, number, sweep_dir / str(number), metrics)
                    else:
                        try:
                            study.tell(
                                number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True
                            )
                        except Exception as err:
                            # The study cannot be written either (a full disk): the job's own
                            # line says so, and what the job keeps.
                            if isinstance(error, JobFailed) and failed_write(err):
                                with user_errors():
                                    raise LitlabError(error.reason) from None
                            raise
                        log.warning("trial %d failed: %s", number, failure_line(error))
                    failures.ended(number, error, last=asked == n_trials and not running)
        save_results(study, sweep_dir, metrics)
        if failures.too_many:
            with user_errors():
                raise LitlabError(failures.verdict())


class Failures:
    """When failed trials stop a search, as hydra-optuna-sweeper counts them: by batches of
    `n_jobs` trials, stopping after a batch in which more than `rate` of the trials failed.
    Trials that run asynchronously make their batches in the order they end."""

    def __init__(self, rate: float, batch: int):
        self.rate, self.batch = rate, batch
        self.current: list[tuple[int, BaseException | None]] = []
        self.stopping: list[tuple[int, BaseException | None]] | None = None

    def ended(self, number: int, error: BaseException | None, last: bool) -> None:
        self.current.append((number, error))
        if len(self.current) < self.batch and not last:
            return
        failed = [e for _, e in self.current if e is not None]
        if self.stopping is None and len(failed) > self.rate * len(self.current):
            self.stopping = self.current
        self.current = []

    @property
    def too_many(self) -> bool:
        return self.stopping is not None

    def verdict(self) -> str:
        failed = [(n, e) for n, e in self.stopping if e is not None]
        number, error = failed[0]
        return (
            f"{len(failed)} of {len(self.stopping)} trials failed (more than "
            f"hydra.sweeper.max_failure_rate={self.rate}); trial {number}: "
            f"{failure_line(error).removeprefix('error: ')}"
        )


def save_results(study, sweep_dir: Path, metrics: list[str]) -> None:
    """The best trial's params and value in `<sweep>/optimization_results.yaml`, or for several
    objectives the Pareto front's (`solutions`); each with the values its job ran with."""
    if len(study.directions) > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)
        if not front:
            log.warning("no trial of study %s has completed", study.study_name)
            return
        solutions = [
            {
                "trial": t.number,
                "params": ran_with(sweep_dir / str(t.number), t.params),
                "values": t.values,
            }
            for t in front
        ]
        log.info("Pareto front of %s: trials %s", metrics, [t.number for t in front])
        results = {"name": "optuna", "metrics": metrics, "solutions": solutions}
    else:
        try:
            best = study.best_trial
        except ValueError:  # no trial completed (all pruned or failed)
            log.warning("no trial of study %s has completed", study.study_name)
            return
        params = ran_with(sweep_dir / str(best.number), best.params)
        log.info("best value %s with %s", best.value, params)
        results = {"name": "optuna", "best_params": params, "best_value": best.value}
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
