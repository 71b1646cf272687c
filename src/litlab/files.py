"""Small file helpers shared across litlab."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # the new name itself must survive a crash
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write a whole file atomically (see `replacing`)."""
    with replacing(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
