"""litlab as a package: a built wheel holds the configs, and a project of its own, outside the
checkout, trains, evaluates, predicts and exports with its own net and configs."""

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT
from PIL import Image

import litlab
from litlab.data.idx import read_idx

# The user's three files.
NET = '''
"""A project's own net."""

from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, input_shape, num_classes, width=8):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(width * 16, num_classes),
        )

    def forward(self, x):
        return self.layers(x)
'''
MODEL = """\
# litlab's classifier around this project's net; shapes come from the data config.
defaults:
  - classifier
  - _self_
net:
  _target_: my_nets.TinyCNN
  input_shape: ${data.input_shape}
  num_classes: ${data.num_classes}
  width: 8
"""
EXPERIMENT = """\
# @package _global_
defaults:
  - override /model: tiny_cnn
data:
  labelled: 500
trainer:
  max_epochs: 1
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for part in ("src", "conf"):  # built from a copy: a build leaves build/ behind
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("*.egg-info"))
    for part in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / part, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("litlab-*.whl"))


def test_the_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(litlab.CONFIG_DIR) for p in litlab.CONFIG_DIR.rglob("*.yaml")}
    assert shipped and {f"litlab/conf/{p.as_posix()}" for p in shipped} <= names
    assert "hydra_plugins/litlab_plugins.py" in names  # where Hydra finds the SLURM launcher


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable) beside this venv's packages."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # torch, Lightning and the rest from this venv, litlab from the wheel
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


def run(bin_dir: Path, tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LITLAB_ROOT")}
    result = subprocess.run(
        [bin_dir / tool, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_project_of_its_own_on_the_installed_package(installed, tmp_path, mnist):
    project = tmp_path / "project"
    (project / "conf" / "model").mkdir(parents=True)
    (project / "conf" / "experiment").mkdir()
    (project / "my_nets.py").write_text(NET)
    (project / "litlab.yaml").write_text("modules: [my_nets]\n")  # its runs may name it
    (project / "conf" / "model" / "tiny_cnn.yaml").write_text(MODEL)
    (project / "conf" / "experiment" / "my_exp.yaml").write_text(EXPERIMENT)
    where = run(installed, "python", "-c", "import litlab; print(litlab.CONFIG_DIR)", cwd=project)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent / "lib")

    sweep = project / "logs" / "widths"
    run(
        installed,
        "litlab-train",
        "-m",
        "--config-dir=conf",
        "experiment=my_exp",
        "model.net.width=4,8",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.sweep.dir={sweep}",
        cwd=project,
    )
    ranked = run(installed, "litlab-report", str(sweep), cwd=project)
    assert "2 jobs ranked by val/acc_best" in ranked.stdout
    run_dir = sweep / "1"
    config = (run_dir / "config.yaml").read_text()
    assert "_target_: my_nets.TinyCNN" in config and "width: 8" in config
    trained = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert trained["test/loss"] < 2 * math.log(10)  # a few steps: about log(10) or less

    run(
        installed,
        "litlab-eval",
        f"run_dir={run_dir}",
        f"hydra.run.dir={tmp_path / 'e'}",
        cwd=project,
    )
    evaluated = json.loads((tmp_path / "e" / "metrics.json").read_text())["metrics"]
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])

    image = tmp_path / "digit.png"
    Image.fromarray(read_idx(mnist / "t10k-images-idx3-ubyte")[0].numpy()).save(image)
    predicted = run(
        installed,
        "litlab-predict",
        f"run_dir={run_dir}",
        f"inputs={image}",
        f"hydra.run.dir={tmp_path / 'p'}",
        cwd=project,
    )
    assert json.loads(predicted.stdout.splitlines()[0])["predicted_index"] in range(10)

    run(
        installed,
        "litlab-export",
        f"run_dir={run_dir}",
        "format=torchscript",
        f"hydra.run.dir={tmp_path / 'x'}",
        cwd=project,
    )
    assert (run_dir / "export" / "torchscript" / "model.pt").is_file()
