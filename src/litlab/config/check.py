"""Check a composed config against the classes it names, before anything is imported or written.

A node with a `_target_` is checked against that class's annotated signature, read from the
class's source file without importing it (importing litlab's data modules means importing
Lightning): each setting's type and range come from its annotation (`litlab.settings` has the
words), and a class that takes no `**kwargs` refuses a key it does not take. A project's own
class (`_target_: my_nets.TinyCNN`) is read the same way. A class that has no source file to
read (one defined in a notebook cell, `__main__.NbNet`) is read from the live class instead.
torch's and Lightning's classes are not annotated with bounds; the settings of theirs that
litlab's configs use are listed in `THEIRS`. Interpolated values are checked where they point
to, so `${data.num_classes}` is checked once, at the data. No torch here.
"""

import ast
import builtins
import collections.abc
import difflib
import importlib.util
import inspect
import sys
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from litlab import settings
from litlab.errors import LitlabError
from litlab.files import shown
from litlab.settings import (
    Count,
    Fraction,
    Mode,
    NonNegative,
    Positive,
    PositiveInt,
    Range,
    Share,
)

# --- the parts of the config that no class takes --------------------------------------------

Resume = Literal["auto", "auto_or_fresh"]
MatmulPrecision = Literal["highest", "high", "medium"]  # torch.set_float32_matmul_precision's
Precision = Literal[
    "16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "16", "32", "64", "bf16"
]


class Paths(TypedDict, total=False):
    root_dir: str
    data_dir: str
    log_dir: str
    output_dir: str


class Pretrain(TypedDict, total=False):
    max_epochs: PositiveInt
    model: Any
    data: Any


class TrainConfig(TypedDict, total=False):
    task_name: str
    seed: int
    float32_matmul_precision: MatmulPrecision
    monitor: str
    monitor_mode: Mode
    optimized_metric: str | list[str] | None  # a list: the objectives of a search
    train: bool
    test: bool
    ckpt_path: str | None
    resume: Resume | None
    trust_run: bool
    paths: Paths
    pretrain: Pretrain | None
    compare_scratch: bool


# --- torch's and Lightning's classes: the settings litlab's configs use -----------------------


class Adam(TypedDict, total=False):
    lr: Positive
    betas: list[Share]
    eps: Positive
    weight_decay: NonNegative
    fused: bool | None


class SGD(TypedDict, total=False):
    lr: Positive
    momentum: NonNegative
    weight_decay: NonNegative


class Schedule(TypedDict, total=False):
    interval: Literal["epoch", "step"]  # when it steps (litlab.models.base reads it)


class CosineAnnealing(Schedule, total=False):
    T_max: PositiveInt
    eta_min: NonNegative


class StepSchedule(Schedule, total=False):
    step_size: PositiveInt
    gamma: Positive


class OneCycle(Schedule, total=False):
    max_lr: Positive
    total_steps: PositiveInt | None
    epochs: PositiveInt | None
    steps_per_epoch: PositiveInt | None
    pct_start: Annotated[float, Range(above=0, below=1)]
    anneal_strategy: Literal["cos", "linear"]
    cycle_momentum: bool
    div_factor: Positive
    final_div_factor: Positive
    three_phase: bool


class Trainer(TypedDict, total=False):
    default_root_dir: str
    min_epochs: Count | None
    max_epochs: PositiveInt | None
    max_steps: Annotated[int, Range(low=-1)]
    accelerator: str
    devices: PositiveInt | str | list[Count]
    num_nodes: PositiveInt
    strategy: str
    sync_batchnorm: bool
    precision: Precision | Literal[16, 32, 64]
    check_val_every_n_epoch: PositiveInt | None
    log_every_n_steps: PositiveInt
    deterministic: bool | Literal["warn"]
    fast_dev_run: bool | PositiveInt
    limit_train_batches: PositiveInt | Fraction
    limit_val_batches: Count | Fraction
    limit_test_batches: PositiveInt | Fraction
    overfit_batches: Count | Fraction
    gradient_clip_val: NonNegative | None
    profiler: str | None


class ModelCheckpoint(TypedDict, total=False):
    dirpath: str | None
    filename: str | None
    monitor: str | None
    mode: Mode
    save_top_k: Annotated[int, Range(low=-1)]
    save_last: bool | Literal["link"] | None
    auto_insert_metric_name: bool


class EarlyStopping(TypedDict, total=False):
    monitor: str
    mode: Mode
    patience: Count
    min_delta: NonNegative


class RichProgressBar(TypedDict, total=False):
    refresh_rate: PositiveInt
    leave: bool


class FileLogger(TypedDict, total=False):
    save_dir: str
    name: str | None
    version: str | int | None


class TensorBoard(FileLogger, total=False):
    default_hp_metric: bool


class MLFlow(TypedDict, total=False):
    experiment_name: str
    tracking_uri: str | None
    artifact_location: str | None
    tags: dict | None
    log_model: bool | Literal["all"]


class Wandb(TypedDict, total=False):
    project: str | None
    save_dir: str
    offline: bool
    log_model: bool | Literal["all"]
    settings: dict | None


THEIRS: dict[str, type] = {
    "torch.optim.Adam": Adam,
    "torch.optim.SGD": SGD,
    "torch.optim.lr_scheduler.CosineAnnealingLR": CosineAnnealing,
    "torch.optim.lr_scheduler.StepLR": StepSchedule,
    "torch.optim.lr_scheduler.OneCycleLR": OneCycle,
    "lightning.pytorch.Trainer": Trainer,
    "lightning.pytorch.callbacks.ModelCheckpoint": ModelCheckpoint,
    "lightning.pytorch.callbacks.EarlyStopping": EarlyStopping,
    "lightning.pytorch.callbacks.RichProgressBar": RichProgressBar,
    "lightning.pytorch.loggers.CSVLogger": FileLogger,
    "lightning.pytorch.loggers.TensorBoardLogger": TensorBoard,
    "lightning.pytorch.loggers.MLFlowLogger": MLFlow,
    "lightning.pytorch.loggers.WandbLogger": Wandb,
}


# --- a class's settings, read from its source ------------------------------------------------


@dataclass
class Settings:
    """What a class takes: each setting's type, and whether it refuses any other key."""

    hints: dict[str, Any] = field(default_factory=dict)
    closed: bool = True


# The names an annotation may use: typing's, collections.abc's and litlab.settings' words.
_NAMES = {
    **vars(builtins),
    **{name: getattr(typing, name) for name in typing.__all__},
    **{name: getattr(collections.abc, name) for name in collections.abc.__all__},
    **{name: value for name, value in vars(settings).items() if not name.startswith("_")},
}


@cache
def settings_of(target: str) -> Settings | None:
    """The settings of the class at the dotted path `target`; None where it cannot be read (a
    module that is not there is left for instantiating to report)."""
    if target in THEIRS:
        return Settings(get_type_hints(THEIRS[target], include_extras=True), closed=False)
    found = _find_class(target)
    if found:
        return _read_class(*found)
    live = _live_class(target)
    return _live_settings(live) if live else None


def _live_class(target: str) -> type | None:
    """The class `target` names in a module this process has imported already, where no
    source file says what it is (a class defined in a notebook cell lives in `__main__`)."""
    module, _, name = target.rpartition(".")
    live = getattr(sys.modules.get(module), name, None)
    return live if isinstance(live, type) else None


def _live_settings(cls: type) -> Settings:
    """A live class's settings, from its signature and annotations."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # a builtin's: nothing to read
        return Settings(closed=False)
    try:
        hints = get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # an annotation naming what is not there: not a config value's type
        hints = {}
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    open_ = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return Settings({p.name: hints.get(p.name, Any) for p in named}, closed=not open_)


def locate(module: str) -> tuple[Path | None, list[Path]] | None:
    """Where a module's source is: its file (None for a namespace package) and, for a package,
    its folders; found without importing it or its packages (which may import torch). None
    where there is no such module."""
    top, *parts = module.split(".")
    try:
        spec = importlib.util.find_spec(top) if top.isidentifier() else None
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    file = Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    folders = [Path(p) for p in spec.submodule_search_locations or []]
    for part in parts:
        package = next((f / part for f in folders if (f / part / "__init__.py").is_file()), None)
        if package is not None:
            file, folders = package / "__init__.py", [package]
            continue
        file = next((f / f"{part}.py" for f in folders if (f / f"{part}.py").is_file()), None)
        if file is None:
            return None
        folders = []
    return file, folders


def _source(module: str) -> tuple[ast.Module, bool] | None:
    """A module's parsed source, and whether it is a package."""
    found = locate(module)
    if found is None or found[0] is None:
        return None
    file, folders = found
    return ast.parse(file.read_text(encoding="utf-8")), bool(folders)


def _find_class(target: str, depth: int = 0) -> tuple[ast.ClassDef, ast.Module, str] | None:
    """The class definition `target` names, following the re-exports of packages."""
    module, _, name = target.rpartition(".")
    found = _source(module) if module and depth < 8 else None
    if found is None:
        return None
    tree, package = found
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, tree, module
    source = _imported(tree, module if package else module.rpartition(".")[0], name)
    return _find_class(source, depth + 1) if source else None


def _imported(tree: ast.Module, package: str, name: str) -> str | None:
    """The dotted path `name` is imported from in the top level of a module of `package`."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    base = node.module or ""
                    if node.level:
                        parent = package.rsplit(".", node.level - 1)[0]
                        base = f"{parent}.{base}" if base else parent
                    return f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name or alias.name == name:
                    return alias.name
    return None


def _dotted(expr: ast.expr, tree: ast.Module, module: str) -> str | None:
    """The dotted path a base class expression (`nn.Module`, `Autoencoder`) names."""
    if isinstance(expr, ast.Name):
        defined = any(isinstance(n, ast.ClassDef) and n.name == expr.id for n in tree.body)
        package = module.rpartition(".")[0]
        return f"{module}.{expr.id}" if defined else _imported(tree, package, expr.id)
    if isinstance(expr, ast.Attribute):
        owner = _dotted(expr.value, tree, module)
        return f"{owner}.{expr.attr}" if owner else None
    return None


def _base_settings(cls: ast.ClassDef, tree: ast.Module, module: str) -> Settings | None:
    """The settings of the first base class whose constructor can be read: one of the same
    project, or one of `THEIRS`."""
    for base in cls.bases:
        target = _dotted(base, tree, module)
        same_project = target and target.split(".")[0] == module.split(".")[0]
        if target in THEIRS or same_project:
            found = settings_of(target)
            if found is not None:
                return found
    return None


def _annotation(expr: ast.expr | None) -> Any:
    if expr is None:
        return Any
    try:
        return eval(compile(ast.Expression(expr), "<annotation>", "eval"), dict(_NAMES))
    except Exception:  # a name of torch or of the module (a tensor, a net): not a config value
        return Any


def _read_class(cls: ast.ClassDef, tree: ast.Module, module: str) -> Settings | None:
    init = next(
        (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
    )
    if init is None:  # inherited
        return _base_settings(cls, tree, module)
    args = init.args
    named = [*args.posonlyargs, *args.args][1:] + args.kwonlyargs  # [1:]: self
    own = Settings({a.arg: _annotation(a.annotation) for a in named})
    if args.kwarg is None:
        return own
    base = _base_settings(cls, tree, module)  # **kwargs go to the base class
    if base is None:
        return Settings(own.hints, closed=False)
    return Settings({**base.hints, **own.hints}, closed=base.closed)


def _bound_names(body: list[ast.stmt]) -> set[str] | None:
    """The names a module's top level binds, or None where it cannot be told without running
    it (a star import, a module `__getattr__`)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                return None
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        else:  # if/try/with/for blocks at the top level bind names too
            blocks = [getattr(node, key, []) for key in ("body", "orelse", "finalbody")]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                inner = _bound_names(block) if isinstance(block, list) else set()
                if inner is None:
                    return None
                names |= inner
    return names


def _missing_part(target: str) -> tuple[str, str] | None:
    """Without importing anything: (what is missing, the fix) where `target` names no module
    or no class that its module's source defines; None where it exists or cannot be told."""
    parts = target.split(".")
    if parts[0] == "__main__":
        return (
            "it was defined in the notebook or script that named it, and lives only in that "
            "process",
            f"define {parts[-1]} there before using it, or move it into a module (my_nets.py) "
            f"and name it as my_nets.{parts[-1]}, which any process can import",
        )
    if locate(parts[0]) is None:
        return (
            f"there is no module {parts[0]}",
            f"modules are found in the working directory ({Path.cwd()}) and the installed "
            f"packages: run litlab from the folder holding {parts[0]}.py, or install it",
        )
    for depth, part in enumerate(parts[1:], 1):
        if locate(".".join(parts[: depth + 1])) is not None:
            continue  # a module or package: go on below it
        origin = locate(".".join(parts[:depth]))[0]
        if origin is None:
            return None
        source = origin.read_bytes()
        if b"globals()" in source or b"exec(" in source:
            return None  # names bound at run time
        try:
            names = _bound_names(ast.parse(source).body)
        except (SyntaxError, ValueError):
            return None  # importing it will say what is wrong
        if names is None or part in names:
            return None
        lower = {name.lower(): name for name in sorted(names)}  # Mlp: MLP
        near = [lower[n] for n in difflib.get_close_matches(part.lower(), lower, n=1)]
        hint = (
            f"did you mean {'.'.join([*parts[:depth], near[0]])}?" if near else "check its spelling"
        )
        return f"{shown(origin)} defines no {part}", hint
    return None


# --- the check -------------------------------------------------------------------------------


class _NoSuchClass(Exception):
    """A `_target_` naming a module or class that is not there, found inside the walk."""

    def __init__(self, key: str, target: str, what: str, fix: str):
        self.key, self.target, self.what, self.fix = key, target, what, fix


def check_config(cfg: DictConfig, overrides: collections.abc.Sequence[str] = ()) -> None:
    """Refuse the first value of `cfg` (a composed train config) that does not fit its setting,
    or the first `_target_` naming a class that is not there, with the config file naming it
    (searched in the config folders `overrides` add)."""
    try:
        _check_mapping(cfg, get_type_hints(TrainConfig, include_extras=True), "", closed=False)
    except _NoSuchClass as missing:
        from litlab.config.files import named_in, search_folders  # they read this module

        where = named_in(missing.target, search_folders(overrides))
        raise LitlabError(
            f"{missing.key}={missing.target} ({where}): {missing.what}; {missing.fix}"
        ) from None


def _check_mapping(node: DictConfig, hints: dict, prefix: str, closed: bool) -> None:
    for key in node:
        key = str(key)
        if key.startswith("_"):
            continue
        where = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            raise LitlabError(f"Missing mandatory value: {where}; set it with {where}=...")
        if OmegaConf.is_interpolation(node, key):
            continue  # checked where it points to
        value = node[key]
        if key in hints:
            _check_value(value, hints[key], where)
        elif closed:
            owner = node.get("_target_") or prefix.rstrip(".")
            raise LitlabError(
                f"{where} is not a setting of {owner} (it takes {', '.join(sorted(hints))}); "
                "check its spelling"
            )
        else:
            _walk(value, where)


def _walk(value, where: str) -> None:
    """Check the classes named anywhere inside `value`."""
    if isinstance(value, ListConfig):
        for i in range(len(value)):
            if not OmegaConf.is_interpolation(value, i):
                _walk(value[i], f"{where}[{i}]")
    elif isinstance(value, DictConfig):
        named = "_target_" in value and not OmegaConf.is_interpolation(value, "_target_")
        target = value["_target_"] if named else None
        found = settings_of(target) if isinstance(target, str) else None
        missing = _missing_part(target) if isinstance(target, str) and not found else None
        if missing is not None:
            raise _NoSuchClass(f"{where}._target_", target, *missing)
        hints, closed = (found.hints, found.closed) if found else ({}, False)
        _check_mapping(value, hints, f"{where}.", closed)


def _check_value(value, hint, where: str) -> None:
    problem = _misfit(value, hint)
    if problem is not None:
        raise LitlabError(f"{where}={_show(value)} {problem}")
    if isinstance(value, DictConfig | ListConfig):
        alternatives = _alternatives(hint)
        mapping = next((a for a in alternatives if _is_typed_dict(a)), None)
        if mapping is not None and isinstance(value, DictConfig):
            hints = get_type_hints(mapping, include_extras=True)
            _check_mapping(value, hints, f"{where}.", closed=True)
        elif Any in alternatives or dict in alternatives:
            _walk(value, where)


def _misfit(value, hint) -> str | None:
    """Why `value` does not fit `hint` (its type or range), or None when it does."""
    alternatives = _alternatives(hint)
    if len(alternatives) > 1:
        misfits = [_misfit(value, alternative) for alternative in alternatives]
        if None in misfits:
            return None
        near = [m for m in misfits if m.startswith("must be")]  # the right type, out of range
        return near[0] if len(near) == 1 else f"is not {_or(alternatives)}"
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        if _misfit(value, base) is not None:
            return f"is not {_describe(hint)}"
        if any(isinstance(mark, Range) and not mark.holds(value) for mark in marks):
            return f"must be {_describe(hint)}"
        return None
    return None if _is(value, hint) else f"is not {_describe(hint)}"


def _alternatives(hint) -> tuple:
    if get_origin(hint) in (Union, types.UnionType):
        return tuple(a for h in get_args(hint) for a in _alternatives(h))
    return (hint,)


def _sequence(hint) -> bool:
    return get_origin(hint) in (list, tuple, collections.abc.Sequence)


def _is(value, hint) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or get_origin(hint) in (dict, collections.abc.Mapping):
        return isinstance(value, DictConfig)
    if get_origin(hint) is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(hint))
    if _sequence(hint):
        item = get_args(hint)[0] if get_args(hint) else Any
        return isinstance(value, ListConfig) and all(
            OmegaConf.is_interpolation(value, i) or _misfit(value[i], item) is None
            for i in range(len(value))
        )
    if _is_typed_dict(hint):
        return isinstance(value, DictConfig)
    return True  # a type no config value is made of (a tensor, a net): the class's business


def _is_typed_dict(hint) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__total__")


def _describe(hint) -> str:
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        words = " ".join(mark.words() for mark in marks if isinstance(mark, Range))
        noun = {int: "integer", float: "number"}[base]
        if words in ("positive", "non-negative"):
            return f"a {words} {noun}"
        return f"an {noun} {words}" if base is int else f"a {noun} {words}"
    if get_origin(hint) is Literal:
        values = get_args(hint)
        if len(values) == 1:
            return _show(values[0])
        return "one of " + ", ".join(v if isinstance(v, str) else _show(v) for v in values)
    if _sequence(hint):
        item = _describe(get_args(hint)[0]).split(" ", 1)[1]
        return f"a list of {item.replace('integer', 'integers').replace('number', 'numbers')}"
    if _is_typed_dict(hint):
        return "a mapping of " + ", ".join(get_type_hints(hint))
    if get_origin(hint) in (dict, collections.abc.Mapping):
        return "a mapping"
    names = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
        type(None): "null",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _or(alternatives: tuple) -> str:
    """`alternatives` in words, their fixed values in one list (null last)."""
    values = [v for a in alternatives if get_origin(a) is Literal for v in get_args(a)]
    nullable = type(None) in alternatives
    words = [_describe(a) for a in alternatives if get_origin(a) is not Literal]
    words = [w for w in words if w != "null"]
    if values:
        shown = dict.fromkeys(v if isinstance(v, str) else _show(v) for v in values)
        words.insert(0, "one of " + ", ".join([*shown, *(["null"] if nullable else [])]))
    elif nullable:
        words.append("null")
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]


def _show(value) -> str:
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)
