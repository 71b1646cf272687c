"""Extending litlab as the README says: a net is its Python file, its YAML and its export."""

import os
import shutil
import subprocess

from conftest import DATA_DIR, ROOT, cli_command, need_data

NET = '''"""A small net for the test that adds one."""

from math import prod

from torch import nn

from litlab.settings import PositiveInt, Shape


class TinyNet(nn.Sequential):
    def __init__(self, input_shape: Shape, num_classes: PositiveInt, width: PositiveInt = 8):
        hidden = nn.Linear(prod(input_shape), width)
        super().__init__(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(width, num_classes))
'''

CONFIG = """defaults:
  - classifier
  - _self_
net:
  _target_: litlab.nets.TinyNet
  input_shape: ${data.input_shape}
  num_classes: ${..num_classes}
  width: 8
"""


def test_a_net_added_in_three_places_trains_and_its_settings_are_checked(tmp_path):
    need_data("MNIST")
    checkout = tmp_path / "litlab"
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copytree(ROOT / "conf", checkout / "conf")
    (checkout / "src/litlab/nets/tiny.py").write_text(NET)
    with open(checkout / "src/litlab/nets/__init__.py", "a") as exports:
        exports.write("from litlab.nets.tiny import TinyNet  # noqa: E402, F401\n")
    (checkout / "conf/model/tiny.yaml").write_text(CONFIG)

    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "HYDRA_FULL_ERROR": "0"}
    run_dir = tmp_path / "run"

    def train(*args):
        command = [*cli_command("litlab-train"), "model=tiny", f"paths.data_dir={DATA_DIR}", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    refused = train("model.net.width=abc", f"hydra.run.dir={tmp_path / 'refused'}")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: model.net.width='abc' is not a positive integer"
    assert not (tmp_path / "refused").exists()
    trained = train("debug=fdr", f"hydra.run.dir={run_dir}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "litlab.nets.TinyNet" in (run_dir / "config.yaml").read_text()
    assert "Classifier (TinyNet)" in trained.stdout
