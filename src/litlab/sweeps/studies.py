"""litlab's Optuna search (`hparams_search=...`, `hydra/sweeper=optuna`): a Hydra sweeper on
Optuna's ask-and-tell.

The study lives in a storage (by default `<sweep>/optuna.db`), and rerunning the search with
`hydra.sweep.dir=<that sweep>` continues it. Trial N's job is always `<sweep>/N`: a rerun first
tells the study what the jobs of an earlier, killed submitter reached (their metrics.json), and
its own trials are numbered after the study's, so that no job directory is reused.

With a launcher that runs jobs elsewhere (joblib, slurm), `n_jobs` trials are in flight at
once: a new trial is asked for as soon as any one ends (`batch_synchronous: true` waits for the
whole batch instead, as Hydra's sweepers do). Each trial is told to the study when its job ends.

With a pruner, each job reports its `optimized_metric` to its trial after every epoch through
the storage (litlab.sweeps.pruning.Pruning), and stops early when the pruner says so; its
metrics.json says `"pruned": true`, and the trial is told as pruned.

Optuna is imported only once a search starts: Hydra imports every plugin module at each start.
"""

import logging
import os
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from litlab.cli import user_errors
from litlab.errors import LitlabError
from litlab.files import failed_write
from litlab.run.directory import RunDir

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


def sqlite_file(storage: str | None) -> Path | None:
    """The database file of an SQLite storage URL."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///"))
    return None


def open_storage(url: str):
    """Optuna's storage at `url`; SQLite waits for the other jobs' writes rather than failing."""
    import optuna

    timeout = {"connect_args": {"timeout": 60}} if sqlite_file(url) else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=timeout)


def check_search(pruner: str | None, storage: str | None) -> None:
    """Refuse a search that cannot run, before anything is written."""
    if pruner is not None and pruner not in PRUNERS:
        make_pruner(pruner)  # names the pruners there are
    if pruner is not None and storage is None:
        raise LitlabError(
            f"hydra.sweeper.pruner={pruner} needs a storage that the jobs reach; set "
            "hydra.sweeper.storage=sqlite:///${hydra.sweep.dir}/optuna.db"
        )
    database = sqlite_file(storage)
    if database is None:
        return
    existing = next(p for p in (database, *database.parents) if p.exists())
    if existing == database:
        writable = database.is_file() and os.access(database, os.W_OK)
    else:  # the folders up to it are made
        writable = existing.is_dir() and os.access(existing, os.W_OK)
    if not writable:
        raise LitlabError(
            f"hydra.sweeper.storage={storage}: cannot write {database} ({existing} is not a "
            "writable file or folder); keep the study in the sweep directory (the default) or "
            "name a writable place"
        )


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Optuna distributions for the swept overrides, in Hydra's sweep grammar: `choice(...)`,
    `range(...)` and `interval(...)` (tagged `log` for a log scale, `int` for integers); and the
    overrides that are plain values, passed to every job as they are."""
    space, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def distribution(override: Override):
    """One swept override as an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():  # as Hydra's range: the stop value is left out
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(values[0], values[-1], step=value.step)
    log_scale = "log" in value.tags
    if "int" in value.tags:  # Hydra reads an interval's bounds as floats
        return IntDistribution(int(value.start), int(value.end), log=log_scale)
    return FloatDistribution(value.start, value.end, log=log_scale)


def outcome(job_dir: Path, metric: str) -> tuple[str, float | None]:
    """What a trial's job reached, from its metrics.json: ("COMPLETE", value), ("PRUNED", None),
    or ("FAIL", None) for a job that left no `metric`."""
    job = RunDir(job_dir)
    if job.pruned():
        return "PRUNED", None
    value = job.metrics().get(metric)
    if value is None:
        log.warning("trial %s left no %s in %s: failed", job_dir.name, metric, job.metrics_file)
        return "FAIL", None
    return "COMPLETE", value


def tell(study, number: int, job_dir: Path, metric: str) -> str:
    """Tell the study how trial `number` ended; its state's name."""
    from optuna.trial import TrialState

    state, value = outcome(job_dir, metric)
    study.tell(number, value, state=TrialState[state])
    return state


def settle(study, sweep_dir: Path, metric: str) -> None:
    """Tell an Optuna `study` the results of its trials still marked running, from their job
    directories (those of a submitter that was stopped)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tell(study, trial.number, sweep_dir / str(trial.number), metric)


def trial_callback(cfg: DictConfig, hydra_cfg: DictConfig) -> DictConfig:
    """A job's config with the callback that reports to its Optuna trial, when the job is a
    trial of a search with a pruner (trial N is job N); else `cfg` as it is."""
    search = hydra_cfg.sweeper
    if hydra_cfg.mode != RunMode.MULTIRUN or search.get("pruner") is None:
        return cfg
    with open_dict(cfg):
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks.pruning = {
            "_target_": "litlab.sweeps.pruning.Pruning",
            "storage": search.storage,
            "study_name": search.study_name,
            "trial": hydra_cfg.job.num,
            "pruner": search.pruner,
            "metric": cfg.optimized_metric,
        }
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

        path = Path(failed.filename or sqlite_file(storage) or sweep_dir)
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
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        pruner: str | None = None,
        batch_synchronous: bool = False,
        max_failure_rate: float = 0.0,
        params: DictConfig | None = None,
    ) -> None:
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.pruner = pruner
        self.batch_synchronous = batch_synchronous
        self.max_failure_rate = max_failure_rate
        self.params = params or {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        with user_errors():
            check_search(self.pruner, self.storage)
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def parallel(self) -> int:
        """How many trials run at once: `n_jobs` with a launcher that runs jobs in other
        processes; one with Hydra's basic launcher, which runs them in this one."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        return 1 if isinstance(self.launcher, BasicLauncher) else max(self.n_jobs, 1)

    def sweep(self, arguments: list[str]) -> None:
        with user_errors(), study_writes(self.storage, self.config.hydra.sweep.dir):
            self.search(arguments)

    def search(self, arguments: list[str]) -> None:
        import optuna

        sweep_dir = Path(self.config.hydra.sweep.dir)
        metric = self.config.optimized_metric
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        database = sqlite_file(self.storage)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(self.storage) if self.storage else None,
            sampler=self.sampler,
            direction=self.direction,
            load_if_exists=True,
        )
        settle(study, sweep_dir, metric)
        if study.trials:  # a seeded sampler would draw its first trials' params again
            self.sampler.reseed_rng()
        log.info("study %s: %d trials so far", study.study_name, len(study.trials))

        def launch(trial) -> None:
            params = [f"{key}={value}" for key, value in trial.params.items()]
            (ret,) = self.launcher.launch([[*params, *fixed]], initial_job_idx=trial.number)
            ret.return_value  # noqa: B018  (raises the job's error)

        slots = self.parallel()
        until = ALL_COMPLETED if self.batch_synchronous else FIRST_COMPLETED
        asked, ended, failures = 0, 0, []
        running: dict[Future, int] = {}  # each job in flight, and its trial's number
        with ThreadPoolExecutor(slots) if slots > 1 else _Inline() as pool:
            while running or (asked < self.n_trials and not self.too_many(failures, ended)):
                while asked < self.n_trials and len(running) < slots:
                    if self.too_many(failures, ended):
                        break
                    trial = study.ask(space)
                    running[pool.submit(launch, trial)] = trial.number
                    asked += 1
                done, _ = wait(running, return_when=until)
                for future in done:
                    number, ended = running.pop(future), ended + 1
                    if future.exception() is None:
                        tell(study, number, sweep_dir / str(number), metric)
                    else:
                        try:
                            study.tell(number, state=optuna.trial.TrialState.FAIL)
                        except Exception as err:
                            # A job of this process that said why it stopped (a full disk):
                            # the study cannot be written either; one line says so.
                            if isinstance(future.exception(), SystemExit) and failed_write(err):
                                raise future.exception() from None
                            raise
                        log.warning("trial %d failed: %s", number, future.exception())
                        failures.append(future.exception())
        if self.too_many(failures, ended):
            raise failures[0]
        self.save_results(study, sweep_dir)

    def too_many(self, failures: list, ended: int) -> bool:
        """Whether so many trials failed that the search stops (`max_failure_rate`)."""
        return len(failures) > self.max_failure_rate * ended

    def save_results(self, study, sweep_dir: Path) -> None:
        """The best trial's params and value, in `<sweep>/optimization_results.yaml`."""
        try:
            best = study.best_trial
        except ValueError:  # no trial completed (all pruned or failed)
            log.warning("no trial of study %s has completed", study.study_name)
            return
        log.info("best value %s with %s", best.value, best.params)
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
