"""The modules that moved into litlab's packages, still importable by their old names (and so
as `_target_:` paths in configs) until litlab 0.3, with a FutureWarning naming the new place.

An old name is a module of its own that hands out the new modules' attributes: the new modules
stay as they are, and configs and checkpoints that name the old path keep working.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

REMOVED_IN = "0.3"

# old module: the module(s) its names are in now
MOVED: dict[str, tuple[str, ...]] = {
    "litlab.api": ("litlab.config.compose",),
    "litlab.resolvers": ("litlab.config.resolvers",),
    "litlab.config_check": ("litlab.config.check",),
    "litlab.config_files": ("litlab.config.files",),
    "litlab.rundir": ("litlab.run.directory",),
    "litlab.resume": ("litlab.run.resume",),
    "litlab.checkpoints": ("litlab.run.checkpoints",),
    "litlab.objective": ("litlab.run.objective",),
    "litlab.report": ("litlab.sweeps.report",),
    "litlab.studies": ("litlab.sweeps.studies",),
    "litlab.slurm": ("litlab.sweeps.slurm",),
    "litlab.stats": ("litlab.sweeps.stats",),
    "litlab.predict": ("litlab.inference.predict",),
    "litlab.export": ("litlab.inference.export",),
    "litlab.tasks": ("litlab.speed", "litlab.training.tasks"),
    "litlab.loggers": ("litlab.training.loggers",),
    "litlab.console": ("litlab.training.console",),
    "litlab.pictures": ("litlab.training.pictures",),
    "litlab.callbacks": (
        "litlab.training.console",
        "litlab.training.pictures",
        "litlab.training.coverage",
        "litlab.run.checkpoints",
        "litlab.sweeps.pruning",
        "litlab.speed",
    ),
}


class _Alias(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):  # a module's own attributes, which tools look up on any module
            raise AttributeError(name)
        for home in MOVED[self.__name__]:
            module = importlib.import_module(home)
            if hasattr(module, name):
                warnings.warn(
                    f"{self.__name__}.{name} is now {home}.{name}; the old name goes in litlab "
                    f"{REMOVED_IN}",
                    FutureWarning,
                    stacklevel=2,
                )
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return _Alias(spec.name, f"Moved to {', '.join(MOVED[spec.name])}.")

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
