"""The IDX format of the MNIST family (the files torchvision and the original site ship)."""

import gzip
from pathlib import Path

import numpy as np
import torch

from litlab.errors import LitlabError
from litlab.files import atomic_write

_UBYTE = 0x08


def read_idx(path: Path) -> torch.Tensor:
    """Read an unsigned-byte IDX file (optionally .gz) into a uint8 tensor, checking its header."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise LitlabError(f"cannot read {path}: {err}; delete it and fetch the data again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or not 1 <= raw[3] <= 4:
        raise LitlabError(
            f"{path} is not an unsigned-byte IDX file (bad magic {raw[:4].hex() or 'empty'}); "
            "delete it and fetch the data again (`litlab-data`)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise LitlabError(
            f"{path} is truncated or padded: header says shape {shape} ({expected} bytes) "
            f"but the file has {len(raw)} bytes; delete it and fetch the data again (`litlab-data`)"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically (a reader never sees half a file)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    atomic_write(path, header + array.tobytes())
