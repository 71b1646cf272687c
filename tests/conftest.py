import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import litlab

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
BIN = Path(sys.executable).parent


def need_data(folder: str) -> Path:
    """The fetched dataset folder; `make test` fetches it first, a bare `pytest` may not have."""
    raw = DATA_DIR / folder / "raw"
    if not (raw / "t10k-labels-idx1-ubyte").is_file():
        pytest.skip(f"{raw} is missing: run `make data` (make test does) to fetch it")
    return raw


@pytest.fixture
def mnist() -> Path:
    return need_data("MNIST")


def compose(tmp_path: Path, *overrides: str):
    """A train config writing into tmp_path and reading the fetched data."""
    return litlab.compose(
        "train",
        [f"paths.output_dir={tmp_path}", f"paths.data_dir={DATA_DIR}", "logger=csv", *overrides],
    )


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


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())["metrics"]
