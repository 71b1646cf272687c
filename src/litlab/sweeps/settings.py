"""An Optuna search's settings (`hydra.sweeper`): read, and refused in one line when wrong, before
anything is written. `check_sweeper` runs on the composed config before Hydra starts, and again
when the sweeper starts, so that a search started any other way is checked too.
"""

import inspect
import warnings
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from litlab.errors import LitlabError
from litlab.objective import objectives
from litlab.sweeps.space import SearchSpace, grid, load_function, search_space
from litlab.sweeps.storage import check_heartbeat

# The sweeper classes these settings are for: litlab's, and the name hydra-optuna-sweeper's
# configs give it (lightning-hydra-template's search names it).
SWEEPERS = (
    "hydra_plugins.litlab_plugins.OptunaSweeper",
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
)
KEYS = {
    "_target_",
    "_recursive_",
    "defaults",
    "sampler",
    "direction",
    "storage",
    "study_name",
    "n_trials",
    "n_jobs",
    "pruner",
    "batch_synchronous",
    "max_failure_rate",
    "custom_search_space",
    "params",
    "heartbeat_interval",
    "grace_period",
    "max_retry",
}
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = "tpe, random, cmaes, gp, nsgaii, qmc or grid"
# Optuna's samplers that optimize one objective only.
SINGLE_OBJECTIVE = ("CmaEsSampler",)


def is_search(cfg: DictConfig) -> bool:
    """Whether `cfg` (with its `hydra` section) runs litlab's Optuna search."""
    return OmegaConf.select(cfg, "hydra.sweeper._target_", default=None) in SWEEPERS


def objective_values(metrics: dict[str, float], optimized_metric):
    """What a job hands a sweeper: its `optimized_metric`'s value, or a tuple of values for a
    list of metrics (None where one is missing)."""
    if optimized_metric is None or isinstance(optimized_metric, str):
        return metrics.get(optimized_metric)
    values = tuple(metrics.get(name) for name in objectives(optimized_metric))
    return None if None in values else values


def directions(direction) -> list[str]:
    """`direction` (one, or a list for a multi-objective study) as a list of Optuna's words."""
    given = [direction] if isinstance(direction, str) else direction
    if not isinstance(given, Sequence | ListConfig) or not given:
        given = [direction]
    names = [getattr(d, "name", d) for d in given]  # hydra-optuna-sweeper's Direction enum
    wrong = [d for d in names if d not in DIRECTIONS]
    if wrong:
        raise LitlabError(
            f"hydra.sweeper.direction={direction} is not minimize or maximize; give one of "
            "them, or a list of them for several objectives (direction=[maximize,minimize])"
        )
    return names


def check_sweeper(cfg: DictConfig, arguments: Sequence[str] = ()) -> SearchSpace | None:
    """Refuse an Optuna search whose settings are wrong, in one line naming the setting and
    how to say it; `arguments`: the command line's overrides of the job config. The search's
    space (None for a config that runs no Optuna search)."""
    if not is_search(cfg):
        return None
    search = cfg.hydra.sweeper
    unknown = sorted(set(search) - KEYS)
    if unknown:
        raise LitlabError(
            f"hydra.sweeper.{unknown[0]} is not a setting of the Optuna sweeper; it takes "
            + ", ".join(sorted(k for k in KEYS if not k.startswith("_") and k != "defaults"))
        )
    count("n_trials", search.get("n_trials"), "the number of trials to run, e.g. 20")
    count("n_jobs", search.get("n_jobs"), "the trials in flight at once, e.g. 1")
    rate = search.get("max_failure_rate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise LitlabError(
            f"hydra.sweeper.max_failure_rate={rate} is not a share from 0 to 1; 0 stops at the "
            "first failed trial, 1 never stops"
        )
    if not isinstance(search.get("batch_synchronous", False), bool):
        raise LitlabError(
            f"hydra.sweeper.batch_synchronous={search.batch_synchronous} is not true or false"
        )
    for key in ("study_name", "custom_search_space"):  # the storage: its own check
        value = search.get(key)
        if value is not None and not isinstance(value, str):
            raise LitlabError(f"hydra.sweeper.{key}={value} is not a name; give a string or null")
    objective_count(cfg)
    pruner = search.get("pruner")
    if pruner is not None and len(directions(search.direction)) > 1:
        raise LitlabError(
            f"hydra.sweeper.pruner={pruner}: Optuna cannot prune a multi-objective study; "
            "set hydra.sweeper.pruner=null"
        )
    from litlab.sweeps.studies import check_search

    check_search(pruner, search.get("storage"))
    heartbeat = {key: search.get(key) for key in ("heartbeat_interval", "grace_period")}
    check_heartbeat(search.get("storage"), **heartbeat, max_retry=search.get("max_retry", 1))
    if search.get("custom_search_space"):
        load_function(search.custom_search_space)
    params = search.get("params")
    if params is not None and not isinstance(params, Mapping):
        raise LitlabError(
            f"hydra.sweeper.params={params} is not a mapping; give one key: sweep a line, e.g. "
            "model.optimizer.lr: tag(log, interval(0.0001, 0.1))"
        )
    space = search_space(params, task_arguments(arguments))
    make_sampler(search.sampler, space, directions(search.direction))
    return space


def count(key: str, value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LitlabError(f"hydra.sweeper.{key}={value} is not a whole number from 1; give {what}")


def objective_count(cfg: DictConfig) -> None:
    """One direction for each metric optimized."""
    wanted = directions(cfg.hydra.sweeper.direction)
    metrics = objectives(cfg.get("optimized_metric"))
    if not metrics:
        raise LitlabError("an Optuna search needs optimized_metric=<a metric the model logs>")
    if len(metrics) != len(wanted):
        raise LitlabError(
            f"hydra.sweeper.direction names {len(wanted)} objective(s) and optimized_metric "
            f"{len(metrics)}; give a list of as many metrics as directions, e.g. "
            "optimized_metric=[val/acc_best,model/params] "
            "'hydra.sweeper.direction=[maximize,minimize]'"
        )


def task_arguments(arguments: Sequence[str]) -> list[str]:
    """The overrides the sweeper gets: those of the job config, not Hydra's own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(arguments))
    return [o.input_line for o in parsed if not o.is_hydra_override()]


def sampler_class(sampler: DictConfig):
    import optuna

    target = str(sampler.get("_target_", ""))
    if target.endswith("raise_motpe_removed") or target.endswith("MOTPESampler"):
        raise LitlabError(
            "hydra/sweeper/sampler=motpe: Optuna 4 removed the MOTPE sampler; "
            "hydra/sweeper/sampler=tpe optimizes several objectives"
        )
    name = target.removeprefix("optuna.samplers.")
    cls = getattr(optuna.samplers, name, None)
    if name == target or not inspect.isclass(cls):
        raise LitlabError(
            f"hydra.sweeper.sampler._target_={target} is not one of Optuna's samplers; "
            f"choose one with hydra/sweeper/sampler={SAMPLERS}"
        )
    return cls


def make_sampler(sampler: DictConfig, space: SearchSpace, objectives_directions: list[str]):
    """The Optuna sampler `sampler` (a `hydra/sweeper/sampler` config) describes; the grid
    sampler takes its grid from the search's space."""
    import optuna
    from hydra.utils import instantiate

    cls = sampler_class(sampler)
    settings = {k: v for k, v in sampler.items() if k not in ("_target_", "_partial_")}
    takes = inspect.signature(cls).parameters
    unknown = sorted(set(settings) - set(takes) - {"search_space"})
    if unknown:
        choice = cls.__name__.removesuffix("Sampler").lower()
        raise LitlabError(
            f"hydra.sweeper.sampler.{unknown[0]}: Optuna's {cls.__name__} takes no {unknown[0]} "
            f"(it takes {', '.join(k for k in takes if k != 'search_space')}); remove it where "
            f"the search config sets it, or choose another sampler than {choice}"
        )
    if cls.__name__ in SINGLE_OBJECTIVE and len(objectives_directions) > 1:
        raise LitlabError(
            f"Optuna's {cls.__name__} optimizes one objective; for several choose "
            "hydra/sweeper/sampler=tpe, nsgaii, random, qmc, gp or grid"
        )
    for key, value in settings.items():
        if wrong_kind(value, takes[key].default):
            default = takes[key].default
            raise LitlabError(
                f"hydra.sweeper.sampler.{key}={value} is not of the kind {cls.__name__} takes "
                f"(a {type(default).__name__}, e.g. {default})"
            )
        if OmegaConf.is_config(value):
            settings[key] = instantiate(value)
    if "search_space" in takes:
        settings["search_space"] = grid(space.distributions)
    try:
        with warnings.catch_warnings():  # QMC and GP are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**settings)
    except (TypeError, ValueError) as err:
        raise LitlabError(
            f"hydra.sweeper.sampler: {cls.__name__} refuses {settings}: {err}"
        ) from err


def wrong_kind(value, default) -> bool:
    """Whether `value` is not of the kind of a sampler's `default` (a number or true/false)."""
    if isinstance(default, bool):
        return not isinstance(value, bool)
    if isinstance(default, int | float):
        kinds = (int, float) if isinstance(default, float) else int
        return isinstance(value, bool) or not isinstance(value, kinds)
    return False
