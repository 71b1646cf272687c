"""An Optuna search's space, read from Hydra's sweep grammar as hydra-optuna-sweeper reads it.

`hydra.sweeper.params` come first, then the command line's overrides; a later one for the same
key wins. A swept value becomes an Optuna distribution:

- `choice(a, b)`, `a,b` and `shuffle(range(...))`: categorical;
- `range(start, stop, step)`: integers (floats where one bound or the step is a float) from
  start to stop, stop included;
- `interval(low, high)`: floats, integers where both bounds are (`int(interval(...))`, or
  litlab's `tag(int, interval(...))`); `tag(log, ...)` on a log scale.

A plain value is a fixed key: every job gets it, and it leaves the search space even where
`params` sweeps it. A deletion (`~key`) is passed to every job as it is.
"""

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.errors import HydraException

from litlab.errors import LitlabError


@dataclass
class SearchSpace:
    distributions: dict[str, Any] = field(default_factory=dict)  # key -> Optuna distribution
    fixed: dict[str, str] = field(default_factory=dict)  # key -> value, for every job
    deletions: list[str] = field(default_factory=list)  # `~key` overrides, for every job

    def job_overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: its sampled `params`, then the fixed keys and deletions."""
        sampled = [f"{key}={value}" for key, value in params.items()]
        return [*sampled, *(f"{key}={value}" for key, value in self.fixed.items()), *self.deletions]


def search_space(params: dict | None, arguments: list[str]) -> SearchSpace:
    """The search `params` (`hydra.sweeper.params`) and the command line's `arguments` span."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except HydraException as err:
        raise LitlabError(f"{err}".splitlines()[0] + "; see hydra.sweeper.params") from err
    space = SearchSpace()
    for override in overrides:
        if override.is_delete():
            space.deletions.append(override.input_line)
            continue
        key = override.get_key_element()
        if override.is_sweep_override():
            try:
                space.distributions[key] = distribution(override)
            except ValueError as err:  # Optuna's: e.g. a range that runs backwards
                raise LitlabError(f"{override.input_line}: {err}") from err
        else:
            space.fixed[key] = override.get_value_element_as_str()
    for key in space.fixed:  # a key fixed on the command line is not searched
        space.distributions.pop(key, None)
    return space


def distribution(override: Override):
    """One swept override as an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():  # stop included
        bounds = (value.start, value.stop, value.step)
        if any(isinstance(bound, float) for bound in bounds):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(value.start, value.stop, step=value.step)
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        whole = isinstance(value.start, int) and isinstance(value.end, int)
        if whole or "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise LitlabError(
        f"{override.input_line}: an Optuna search takes choice, range or interval sweeps "
        "(glob sweeps only Hydra's basic sweeper)"
    )


def grid(distributions: dict[str, Any]) -> dict[str, list]:
    """Every value of each distribution, for Optuna's grid sampler (a range's stop included)."""
    from optuna.distributions import CategoricalDistribution

    values = {}
    for key, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None and not dist.log:
            count = round((dist.high - dist.low) / dist.step) + 1
            values[key] = [dist.low + i * dist.step for i in range(count)]
            if isinstance(dist.step, float):  # 0.1 * 3 is 0.30000000000000004
                values[key] = [round(value, 12) for value in values[key]]
        else:
            raise LitlabError(
                f"hydra/sweeper/sampler=grid needs a value list for {key}, which is an interval "
                "or a log range; sweep it with choice(...) or range(start, stop, step)"
            )
    return values


def grid_size(distributions: dict[str, Any]) -> int:
    size = 1
    for values in grid(distributions).values():
        size *= len(values)
    return size


def load_function(path: str):
    """The function `custom_search_space` names: `module.function`, importable, or in a file
    `module.py` of the current folder (as hydra-optuna-sweeper's example names its own)."""
    module_name, _, name = path.rpartition(".")
    what = f"hydra.sweeper.custom_search_space={path}"
    if not module_name or not name:
        raise LitlabError(f"{what}: name a function as module.function")
    module = sys.modules.get(module_name)
    if module is None:
        file = Path.cwd() / f"{module_name}.py"
        try:
            if file.is_file():  # a name such as custom-search-space-objective
                spec = importlib.util.spec_from_file_location(module_name, file)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[module_name] = module
            else:
                module = importlib.import_module(module_name)
        except ImportError as err:
            raise LitlabError(
                f"{what}: cannot import {module_name} ({err}); put it on PYTHONPATH or in "
                "the folder litlab-train runs in"
            ) from err
    function = getattr(module, name, None)
    if not callable(function):
        raise LitlabError(f"{what}: {module_name} has no function {name}")
    return function
