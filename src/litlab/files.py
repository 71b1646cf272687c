"""Small file helpers shared across litlab."""

import errno
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from omegaconf import ListConfig

from litlab.errors import LitlabError


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A file to write the new `path` into: readers, and a process killed halfway, see the old
    file or the whole new one, never a part.

    The bytes go to a temporary file in the same directory, reach the disk (fsync), and only
    then take the name with one `os.replace`. The temporary name is unique per call, so
    processes (DDP ranks) writing the same file do not collide.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        with open(tmp, "xb") as f:  # unlike mkstemp's 0600, the permissions the umask gives
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        failed = failed_write(err)
        if failed is not None and not failed.filename:  # a write says not which file it was
            failed.filename = str(path)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # the new name itself must survive a crash
        os.fsync(directory)
    finally:
        os.close(directory)


def failed_write(err: BaseException) -> OSError | None:
    """The OSError behind `err` (itself, or what it was raised from or while handling: torch's
    checkpoint writer reports a full disk as a RuntimeError over one, SQLite as an error of its
    own); None when none is."""
    while err is not None:
        if isinstance(err, OSError):
            return err
        if isinstance(err, sqlite3.OperationalError) and "disk is full" in str(err):
            return OSError(errno.ENOSPC, str(err))  # an Optuna study's SQLite storage
        err = err.__cause__ or err.__context__
    return None


def human_size(n: float) -> str:
    """A number of bytes as people read it: 812 B, 64.0 KiB, 1.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write a whole file atomically (see `replacing`)."""
    with replacing(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def expand(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Each input path; a folder stands for the files in it (hidden ones aside)."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def input_list(inputs) -> list[str]:
    """The inputs a command names (one, or a list); a folder among them must hold a file
    (`expand` reads the files of a folder, not its folders)."""
    many = isinstance(inputs, ListConfig | list | tuple)
    items = [str(i) for i in inputs] if many else [str(inputs)]
    if not items:
        raise LitlabError("inputs=[] names nothing to classify; pass inputs=<file> or [a,b,...]")
    for item in items:
        if Path(item).is_dir() and next(expand([item]), None) is None:
            inner = sorted(p.name for p in Path(item).iterdir() if p.is_dir())
            also = (
                f" (its folders are not read: name them, inputs=[{item}/{inner[0]},...])"
                if inner
                else ""
            )
            raise LitlabError(
                f"inputs={item}: the folder holds no files to classify{also}; "
                "put the images or texts in it, or name the files"
            )
    return items


def shown(path: Path) -> str:
    """`path` as the user would type it: relative to the working directory when inside it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
