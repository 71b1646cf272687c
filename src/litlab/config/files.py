"""The config files themselves, checked before Hydra composes them: what Hydra would read
differently from what their author wrote, and YAML it cannot parse, each refused with one line
naming the file and line; and which file names a class (`named_in`), for the config check's
line about a `_target_` that is not there.

Hydra reads a `# @package` header only among a file's first lines; after any other line it is a
plain comment, and the file's values land under its group's key (`experiment.model...`) where
nothing reads them. The groups whose files litlab writes as `# @package _global_` (experiment,
debug, ...) set values across the whole config: a user's file in them needs that header too.

Importing this module is cheap (no torch): every command line is checked with it first.
"""

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf._utils import get_yaml_loader

from litlab import CONFIG_DIR
from litlab.errors import LitlabError
from litlab.files import shown

GLOBAL_HEADER = "# @package _global_"
_HEADER = re.compile(r"^\s*#\s*@package\b")
_GLOBAL = re.compile(r"^\s*#\s*@package\s+_global_(\.\S+)?\s*$")  # or below it: _global_.model
_DIRECTIVE = re.compile(r"^\s*#\s*@")  # what Hydra reads as a header line


def header_problem(path: Path, lines: Sequence[str], global_group: bool) -> str | None:
    """Why Hydra would not read the file's package header as its author meant, or None."""
    # Hydra reads header lines until the first line that is neither blank nor `# @...`.
    body = next(
        (n for n, line in enumerate(lines, 1) if line.strip() and not _DIRECTIVE.match(line)),
        len(lines) + 1,
    )
    headers = [n for n, line in enumerate(lines, 1) if _HEADER.match(line)]
    misplaced = [n for n in headers if n > body]
    if misplaced:
        return (
            f"{shown(path)}:{misplaced[0]}: `{lines[misplaced[0] - 1].strip()}` comes after "
            "other lines, where Hydra reads it as a plain comment and puts the file's values "
            "under its group's key; move it to line 1"
        )
    if global_group and not any(_GLOBAL.match(lines[n - 1]) for n in headers):
        return (
            f"{shown(path)} has no `{GLOBAL_HEADER}` line: a file of its group sets values "
            f"across the whole config; make `{GLOBAL_HEADER}` its first line"
        )
    return None


def yaml_problem(path: Path, text: str) -> str | None:
    """The first YAML syntax error in `text` as `file:line: what`, or None."""
    try:
        yaml.load(text, Loader=get_yaml_loader())  # Hydra's own loader
    except yaml.MarkedYAMLError as err:
        # A key or bracket left open is where the scanner started; anything else is where it
        # failed (a duplicate key, a bad indent).
        opened = err.context and ("scanning" in err.context or "flow" in err.context)
        mark = err.context_mark if opened and err.context_mark else err.problem_mark
        where = f"{shown(path)}:{mark.line + 1}" if mark else shown(path)
        context = f" ({err.context})" if err.context else ""
        return f"{where}: {err.problem}{context}; fix the YAML there"
    except yaml.YAMLError as err:
        return f"{shown(path)}: {err}; fix the YAML there"
    return None


def yaml_files(folder: Path) -> Iterable[tuple[str, Path]]:
    """(group, file) for each config file under `folder`; the top level's group is ""."""
    for path in sorted(folder.rglob("*.yaml")):
        yield path.relative_to(folder).parent.as_posix().removeprefix("."), path


@cache
def global_groups() -> frozenset[str]:
    """The top-level groups of litlab's own configs whose files are all `_global_`."""
    heads: dict[str, set[bool]] = {}
    for group, path in yaml_files(CONFIG_DIR):
        if group:
            first = path.read_text().split("\n", 1)[0].strip()
            heads.setdefault(group.split("/")[0], set()).add(first == GLOBAL_HEADER)
    return frozenset(group for group, firsts in heads.items() if firsts == {True})


def check_folder(folder: Path, parse: bool = True) -> None:
    """Refuse the first file under `folder` whose header Hydra would misread, or (`parse`)
    whose YAML it cannot parse."""
    for group, path in yaml_files(folder):
        text = path.read_text(errors="replace")
        in_global = group.split("/")[0] in global_groups()
        problem = header_problem(path, text.splitlines(), in_global)
        if problem is None and parse:
            problem = yaml_problem(path, text)
        if problem is not None:
            raise LitlabError(problem)


def search_folders(overrides: Sequence[str]) -> list[Path]:
    """The folders a command line's `hydra.searchpath=[file://...]` adds (--config-dir too)."""
    given = [o for o in overrides if o.startswith("hydra.searchpath=")]
    if not given:
        return []
    entries = OverridesParser.create().parse_override(given[-1]).value() or []
    return [Path(e.removeprefix("file://")) for e in entries if str(e).startswith("file://")]


def check_config_files(overrides: Sequence[str]) -> None:
    """Check litlab's own config files and those of the folders `overrides` add."""
    check_folder(CONFIG_DIR, parse=False)  # litlab's own parse: its tests compose each
    for folder in search_folders(overrides):
        if folder.is_dir():
            check_folder(folder)


# --- the classes the configs name ----------------------------------------------------------


def named_in(target: str, folders: Sequence[Path]) -> str:
    """The config file (and line) that names `target`, else the command line."""
    pattern = re.compile(rf"^\s*_target_:\s*['\"]?{re.escape(target)}['\"]?\s*(#.*)?$")
    for folder in [*folders, CONFIG_DIR]:
        for _, path in yaml_files(folder):
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.match(line):
                    return f"{shown(path)}:{number}"
    return "the command line"
