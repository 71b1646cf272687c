"""What a run's config may name: a run from elsewhere is data, not code.

Building a run instantiates every `_target_` in its config.yaml, so a doctored config could make
any function run (`builtins.open` with `mode: w`, `os.system`). A run litlab did not make may
name only classes (or `_partial_` factories of classes) defined in `TRUSTED` (litlab, and the
parts of torch, torchvision, torchmetrics and Lightning a run is built of) or in the project's
own modules, which its `litlab.yaml` (in the folder litlab runs from) names:

    modules: [my_nets]

A `litlab.yaml` that comes with the run (in the run or its sweep, as the working directory)
counts for nothing. `trust_run=true` lets any other class through. Refused even then: what is
not a class (a function, a method, a name no Python source defines, such as `builtins.open`),
so that a class taking a callable (LambdaLR's `lr_lambda`) gets a class too; the classes of
Python's own modules that run programs or code (`NEVER`); and the resolvers that build config
nodes out of strings (`${oc.decode:...}` could make a target): a run litlab writes holds
resolved values, and one saved unresolved may call only those that give back plain values
(`RESOLVERS`).

Pure: the classes are told from functions by reading the source files that define them with
`ast` (following re-exports and star imports as Python would); nothing named is imported, and
there is no torch here.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from litlab.config.check import check_config, locate
from litlab.errors import LitlabError

# Where the classes a run may name are defined (a module and everything below it).
TRUSTED = (
    "litlab",
    "torch.nn",
    "torch.optim",
    "torchvision.transforms",
    "torchvision.models",
    "torchmetrics.classification",
    "torchmetrics.regression",
    "torchmetrics.aggregation",
    "lightning.pytorch.core",
    "lightning.pytorch.trainer",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.profilers",
)
# Python's own modules that run programs or code, or open files and sockets: their classes
# (subprocess.Popen, threading.Thread) are refused even in a run the user trusts.
NEVER = (
    "builtins", "os", "posix", "nt", "sys", "subprocess", "shutil", "pathlib", "io", "tempfile",
    "importlib", "runpy", "code", "codeop", "pickle", "marshal", "shelve", "ctypes", "pty",
    "multiprocessing", "concurrent", "threading", "asyncio", "socket", "http", "urllib",
    "webbrowser", "signal",
)  # fmt: skip
PROJECT_FILE = "litlab.yaml"
HOW_TO_TRUST = "trust_run=true (trust_run=True for litlab.load_run)"
# The resolvers a run's config may call: litlab's own, and OmegaConf's and Hydra's that give
# back plain values (not oc.decode or oc.create, which build nodes out of strings).
RESOLVERS = {
    "objective_mode", "objective_direction", "fastest_cpu_precision", "hydra_choice", "run_id",
    "now", "oc.env", "oc.select",
}  # fmt: skip
_RESOLVER = re.compile(r"\$\{\s*([^\s:{}$]*)\s*:")


def project_modules(folder: Path) -> tuple[str, ...]:
    """The modules the project in `folder` names as its own."""
    path = folder / PROJECT_FILE
    if not path.is_file():
        return ()
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        modules = settings.get("modules", []) if isinstance(settings, dict) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LitlabError(f"cannot read {path} ({err}); it lists the project's modules") from err
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise LitlabError(
            f"{path}: modules must be a list of module names, e.g. modules: [my_nets]"
        )
    return tuple(modules)


# --- what a dotted path names, read from source ---------------------------------------------


@dataclass(frozen=True)
class Named:
    """What a `_target_` names: `kind` is "class", "function", "module" or "other" (an
    attribute of a class, a value bound at run time), or None where no source says;
    `module` is where it is defined; `through` the modules reaching it imports."""

    kind: str | None
    module: str
    through: tuple[str, ...]


@cache
def _parsed(module: str) -> tuple[ast.Module, bool] | None:
    """A module's parsed source, and whether it is a package (None: no Python source)."""
    found = locate(module)
    if found is None or found[0] is None:
        return None
    file, folders = found
    try:
        return ast.parse(file.read_bytes()), bool(folders)
    except (OSError, SyntaxError, ValueError):
        return None


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """A module's top-level statements, those inside if/try/with blocks too, in order."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _statements(node.orelse)  # bound for type checkers only
            continue
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            for key in ("body", "orelse", "finalbody"):
                yield from _statements(getattr(node, key, []))
            for handler in getattr(node, "handlers", []):
                yield from _statements(handler.body)


def _absolute(node: ast.ImportFrom, module: str, package: bool) -> str:
    """The module a `from ... import` names, relative imports made absolute."""
    if not node.level:
        return node.module or ""
    base = module if package else module.rpartition(".")[0]
    base = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
    return f"{base}.{node.module}" if node.module else base


@cache
def _bindings(module: str) -> tuple[dict[str, tuple[str, str | None]], tuple[str, ...]] | None:
    """What each top-level name of `module` is bound to (the last binding wins): ("class" |
    "function" | "other", None) or ("import", dotted path); and the modules it star-imports."""
    parsed = _parsed(module)
    if parsed is None:
        return None
    tree, package = parsed
    names: dict[str, tuple[str, str | None]] = {}
    stars: list[str] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.ClassDef):
            names[node.name] = ("class", None)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = ("function", None)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = ("import", alias.name)
                else:
                    top = alias.name.split(".")[0]
                    names[top] = ("import", top)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, package)
            for alias in node.names:
                if alias.name == "*":
                    stars.append(source)
                else:
                    names[alias.asname or alias.name] = ("import", f"{source}.{alias.name}")
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for name in _assigned(targets):
                names[name] = ("other", None)
    return names, tuple(stars)


def _assigned(targets: list[ast.expr]) -> Iterator[str]:
    """The names an assignment binds (`Adam.__module__ = ...` binds none)."""
    for target in targets:
        if isinstance(target, ast.Name):
            yield target.id
        elif isinstance(target, ast.Tuple | ast.List):
            yield from _assigned(target.elts)
        elif isinstance(target, ast.Starred):
            yield from _assigned([target.value])


@cache
def named(target: str) -> Named:
    """What the dotted path `target` names, found as Hydra finds it (a module's attribute first,
    else its submodule), without importing anything."""
    top, *rest = target.split(".")
    if not top.isidentifier() or locate(top) is None:
        return Named(None, top, (top,))
    return _within(top, rest, (top,), 0)


def _within(module: str, parts: list[str], through: tuple[str, ...], depth: int) -> Named:
    if not parts:
        return Named("module", module, through)
    if depth > 32:
        return Named(None, module, through)
    name, rest = parts[0], parts[1:]
    bound = _attribute(module, name, depth)
    if bound is None:
        submodule = f"{module}.{name}"
        if locate(submodule) is None:
            return Named(None, module, through)
        return _within(submodule, rest, (*through, submodule), depth + 1)
    kind, path = bound
    if kind != "import":
        return Named("other" if rest else kind, path, through)
    found = _path(path, through, depth + 1)
    if found.kind == "module":
        return _within(found.module, rest, found.through, depth + 1)
    if rest and found.kind is not None:  # an attribute of a class or a value
        return Named("other", found.module, found.through)
    return found


def _attribute(module: str, name: str, depth: int) -> tuple[str, str] | None:
    """How `name` is bound in `module`: (kind, module defining it), or ("import", dotted path)."""
    bindings = _bindings(module)
    if bindings is None:
        return None
    names, stars = bindings
    if name in names:
        kind, path = names[name]
        return (kind, path) if kind == "import" else (kind, module)
    for star in reversed(stars):  # the last star import binding it wins
        if depth < 32 and _attribute(star, name, depth + 1) is not None:
            return "import", f"{star}.{name}"
    return None


def _path(path: str, through: tuple[str, ...], depth: int) -> Named:
    """What an imported dotted path names: a module, or an attribute of one."""
    if locate(path) is not None:
        return Named("module", path, (*through, path))
    module, _, name = path.rpartition(".")
    if not module or locate(module) is None:
        return Named(None, path, through)
    return _within(module, [name], (*through, module), depth)


# --- the policy -------------------------------------------------------------------------------


def _below(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(f"{root}.") for root in roots)


def target_problem(
    target: object, trusted: bool, modules: tuple[str, ...] = (), project: Path | None = None
) -> str | None:
    """Why a run may not name `target` (None: it may). `trusted`: the user trusts the run;
    `modules`: the project's own, in the folder `project`."""
    if not isinstance(target, str):
        return "is not a dotted path"
    if "${" in target:
        return "is an interpolation; a run's config.yaml names its classes as written"
    found = named(target)
    top = target.split(".")[0]
    if top == "__main__":  # a notebook's or script's own class: that process alone had it
        name = target.rpartition(".")[2]
        return (
            "names a class of the notebook or script that trained the run, which only that "
            f"process had; move {name} into a module (my_nets.py), name it my_nets.{name} in "
            "the run's config.yaml, and run litlab where that module is"
        )
    if found.kind is None and found.through == (top,) and locate(top) is None:
        return (
            f"names a module that is not here ({top}); run litlab from the project's folder "
            f"(the one holding {top}.py), or install it"
        )
    if found.kind != "class":
        what = {
            "function": "a function",
            "module": "a module",
            "other": "an attribute or a value, not a class",
            None: "no class defined in Python source (a built-in such as open or eval, or a "
            "missing name)",
        }[found.kind]
        return f"is {what}: a run may name only classes; refused even with trust_run=true"
    never = next((m for m in (*found.through, found.module) if _below(m, NEVER)), None)
    if never is not None:
        return (
            f"is a class of {never}, which runs programs or code or opens files; refused "
            "even with trust_run=true"
        )
    if trusted:
        return None
    packages = (*{root.split(".")[0] for root in TRUSTED}, *modules)
    strange = next((m for m in found.through if not _below(m, packages)), None)
    if strange is None and _below(found.module, (*TRUSTED, *modules)):
        return None
    where = strange or found.module
    top = where.split(".")[0]  # the package to name in litlab.yaml
    own = ""
    if project is not None and _in_project(top, project):
        own = f"; or name your project's module in {PROJECT_FILE} (modules: [{top}])"
    return (
        f"is a class of {where}, not one litlab trusts in a run it did not make (those of "
        f"litlab, torch.nn, torch.optim, torchvision's transforms and models, torchmetrics' "
        f"metrics, Lightning's Trainer, callbacks and loggers, and the project's own modules); "
        f"if you trust this run, pass {HOW_TO_TRUST}{own}"
    )


def _in_project(module: str, project: Path) -> bool:
    """Whether `module` is a file or package of the folder `project`."""
    found = locate(module)
    origin = found and (found[0] or next(iter(found[1]), None))
    return bool(origin) and Path(origin).resolve().is_relative_to(project)


def project_of(run: Path) -> Path | None:
    """The project's folder, the working directory; None where that is the run, in it, or its
    sweep: what a run brings along is not the project's."""
    here, run = Path.cwd().resolve(), run.resolve()
    sweep = run.parent if (run.parent / "multirun.yaml").is_file() else run
    return None if here.is_relative_to(run) or here == sweep else here


def check_run_targets(config: dict, trusted: bool = False, project: Path | None = None) -> None:
    """Refuse the first thing in a run's `config` (a plain container, not resolved) that would
    run code of its own making when built: a `_target_` that is not a trusted class, or a
    resolver that may build one. `project`: the project's folder (see `project_of`)."""
    modules = project_modules(project) if project else ()
    for where, value in _items(config, ""):
        if where.endswith("._target_") or where == "_target_":
            problem = target_problem(value, trusted, modules, project)
            if problem is not None:
                raise LitlabError(f"{where}={value} {problem}")
        elif isinstance(value, str):
            called = set(_RESOLVER.findall(value)) - RESOLVERS
            if called:
                raise LitlabError(
                    f"{where}={value} calls the resolver {sorted(called)[0]}, which may build a "
                    "target out of a string; a run litlab writes holds resolved values "
                    "(refused even with trust_run=true)"
                )


def _items(node, prefix: str) -> Iterator[tuple[str, object]]:
    """Every (dotted key, value) below `node`, a node's `_target_` before its other keys."""
    if isinstance(node, dict):
        keys = sorted(node, key=lambda key: key != "_target_")
        for key in keys:
            where = f"{prefix}{key}"
            yield where, node[key]
            yield from _items(node[key], f"{where}.")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            where = f"{prefix.rstrip('.')}[{i}]"
            yield where, item
            yield from _items(item, f"{where}.")


def check_run_config(cfg: DictConfig, config_file: Path, trusted: bool = False) -> None:
    """Check a run's config before anything is built from it: what it names (see the module's
    words), then every value, as litlab-train checks a new config; one line naming the file."""
    if not isinstance(trusted, bool):  # trust_run=yes would read as a string
        raise LitlabError(f"trust_run={trusted} must be true or false")
    try:
        project = project_of(config_file.parent)
        check_run_targets(OmegaConf.to_container(cfg), trusted, project)
        check_config(cfg)
    except LitlabError as err:
        raise LitlabError(f"{config_file}: {err}") from None
