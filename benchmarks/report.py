"""Shared by the benchmarks: timing, the machine's description, and docs/benchmarks.md sections."""

import datetime
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

import litlab

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
HEADER = """# Benchmarks

`make bench` rewrites every CPU section of this page from the current code, and
`bash benchmarks/gpu.sh` the GPU sections on a machine with one; each section names the commit,
the machine and the command that measured it. Every ratio compares two runs made side by side in
one process on the same data. What each section compares against:

| section | baseline |
|---|---|
| Start-up | `python -c "import torch"` and `python -c "import lightning"` |
| MNIST input pipeline | torchvision's `MNIST` dataset, `ToTensor`, `Normalize` and `DataLoader` |
| Training epoch | a hand-written loop, and bare Lightning: same net, batch, validation |
| The article's CNN over seeds | none: `make train` itself, several seeds, native and AVX2 kernels |
| The article's CNN vs Keras | the article's own Keras code on the same MNIST files |
| torch.compile | the same net and step in eager PyTorch |
| Text pipeline | batches drawn at random, without length buckets |
| Text at scale | the same run on a 20k-row corpus; a corpus's first run (no cache) |
| Text classification accuracy | TF-IDF (1-2 grams, 10k) + logistic regression, same split |
| Variational autoencoders | pytorch/examples' VAE in a plain loop; the CNN from scratch |
| MNIST speedrun | `experiment=seed_cnn` (the article's 5 epochs), same device settings |
| Optuna searches | the same search without a pruner; trials in batches (Hydra's sweepers) |
| Triton kernels on sm_80 / sm_90 | none: the compiler's static figures, the GPUs' limits |
"""


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()


def vector_extensions() -> str:
    """The CPU's vector extensions that change which kernels torch and oneDNN run."""
    try:
        flags = set(
            re.search(r"flags\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).split()
        )
    except (OSError, AttributeError):
        return "unknown vector extensions"
    known = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}
    return "/".join(name for flag, name in known.items() if flag in flags) or "no AVX2"


def commit() -> str:
    """The commit measured, and whether the tree had changes it does not hold."""
    root = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # the page the benchmarks write is not what they measure
            [
                *git,
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                f":(exclude){DOC.relative_to(root)}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


# Taken when a benchmark starts, so that a commit made while it runs is not named.
MEASURED = commit()


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_name()} ({vector_extensions()}), {os.cpu_count()} cores, {device}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}"
    )


def train_config(*overrides: str):
    """The `train` config with `overrides`, reading data/ and writing into a fresh temp dir."""
    return litlab.compose(
        "train",
        [*overrides, f"paths.data_dir={DATA_DIR}", f"paths.output_dir={tempfile.mkdtemp()}"],
    )


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on a GPU, so that a wall time counts them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class EpochTimer(Callback):
    """Wall time of each training epoch, its validation included."""

    seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        synchronize(pl_module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        synchronize(pl_module.device)
        EpochTimer.seconds.append(time.perf_counter() - self._start)


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md: a script's name, with
    `_gpu` appended for its run on a GPU (by benchmarks/gpu.sh)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = {
        "compile_gpu": "`bash benchmarks/gpu.sh`",
        "seed_cnn_speed_gpu": "`bash benchmarks/gpu.sh --all`",
        "epoch_time_gpu": "`bash benchmarks/gpu.sh --all`",
    }.get(name, f"`make bench` (or `python benchmarks/{name}.py`)")
    section = (
        f"<!-- {name}:start -->\n## {title}\n\n"
        f"Measured {stamp} at {MEASURED} on {machine()}.  \n"
        f"Command: {command}.\n\n"
        f"{body.strip()}\n<!-- {name}:end -->"
    )
    old = DOC.read_text() if DOC.exists() else ""  # its sections under the current header
    text = f"{HEADER}\n{old[old.index('<!--') :]}" if "<!--" in old else HEADER
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text}\n{section}\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    print(section)
