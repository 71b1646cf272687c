import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import postgres_server
import pytest
import slurm_cluster

import litlab

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
BIN = Path(sys.executable).parent

# Inductor's on-disk cache does not key its kernels by ATEN_CPU_CAPABILITY: a run that forces
# the AVX2 kernels on an AVX-512 CPU would load kernels built for the other one, and compute
# garbage. Such a run (and the processes it starts) keeps a cache of its own.
if "ATEN_CPU_CAPABILITY" in os.environ:
    os.environ.setdefault(
        "TORCHINDUCTOR_CACHE_DIR",
        os.path.join(tempfile.gettempdir(), f"torchinductor_{os.environ['ATEN_CPU_CAPABILITY']}"),
    )


def need_data(name: str) -> Path:
    """A fetched dataset, or the test skips saying how to fetch it (`make test` does first, a
    bare `pytest` may not have): an image set's raw folder (`MNIST`, `FashionMNIST`), else a
    corpus's file (`bbc_news`: data/text/bbc_news.jsonl)."""
    raw = DATA_DIR / name / "raw"
    path = raw if name[0].isupper() else DATA_DIR / "text" / f"{name}.jsonl"
    if not (raw / "t10k-labels-idx1-ubyte" if path is raw else path).is_file():
        pytest.skip(f"{path} is missing: run `make data` (make test does) to fetch it")
    return path


@pytest.fixture
def mnist() -> Path:
    return need_data("MNIST")


def compose(tmp_path: Path, *overrides: str):
    """A train config writing into tmp_path and reading the fetched data."""
    return litlab.compose(
        "train",
        [f"paths.output_dir={tmp_path}", f"paths.data_dir={DATA_DIR}", "logger=csv", *overrides],
    )


def quiet_trainer(**options):
    """A Trainer with no logger, checkpoints, progress bar or model summary unless `options` say
    otherwise: for tests that look at the model, not at what a run writes."""
    import lightning.pytorch as L

    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**(quiet | options))


def cli_command(tool: str) -> list[str]:
    """An installed console script, or `python -m litlab.cli.<tool>` when the installed
    package predates the script."""
    script = BIN / tool
    module = f"litlab.cli.{tool.removeprefix('litlab-')}"
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def run_cli(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a console script the way a user would."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [*cli_command(tool), *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def read_metrics(run_dir: Path) -> dict:
    return read_summary(run_dir)["metrics"]


@pytest.fixture(scope="session")
def mnist_mlp_run(tmp_path_factory) -> Path:
    """A real run shared by the tests that need a trained classifier: the MLP, one epoch on
    20,000 MNIST images (about 94% test accuracy)."""
    need_data("MNIST")
    run_dir = tmp_path_factory.mktemp("mnist_mlp")
    litlab.train(
        compose(
            run_dir,
            "experiment=mlp_relu",
            "trainer.max_epochs=1",
            "data.labelled=20000",
            "callbacks.rich_progress_bar=null",
        )
    )
    return run_dir


@pytest.fixture(scope="session")
def bbc_lstm_run(tmp_path_factory) -> Path:
    """A real run of the article's stacked LSTM on BBC News, briefly trained (20 batches of the
    first 64 words)."""
    need_data("bbc_news")
    run_dir = tmp_path_factory.mktemp("bbc_lstm")
    litlab.train(
        compose(
            run_dir,
            "experiment=seed_rnn",
            "data.max_len=64",
            "debug=limit",
            "trainer.max_epochs=1",
            "callbacks.rich_progress_bar=null",
        )
    )
    return run_dir


@pytest.fixture(scope="session")
def slurm() -> slurm_cluster.Cluster:
    """A two-node SLURM cluster for the session (tests/slurm_cluster.py), stopped at its end."""
    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="litlab-slurm-"))  # short: it holds munge's socket
    try:
        yield slurm_cluster.start(folder)
    finally:
        slurm_cluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> postgres_server.Server:
    """A PostgreSQL server for the session (tests/postgres_server.py), stopped at its end."""
    reason = postgres_server.missing()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="litlab-postgres-"))  # where its user reaches it
    try:
        yield postgres_server.start(folder)
    finally:
        postgres_server.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)
