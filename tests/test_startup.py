"""litlab-train refuses a mistaken command line before torch is imported and before anything is
written; a refused command leaves no folder and changes no byte of an existing run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, cli_command, need_data
from omegaconf import OmegaConf

import litlab

# Runs an entry point (litlab.cli.<argv[1]>) and reports, on exit, which heavy libraries it
# imported.
REPORTING_IMPORTS = """
import atexit, importlib, json, sys
heavy = ("torch", "lightning", "torchvision", "torchmetrics")
atexit.register(lambda: print("imported:", json.dumps([m for m in heavy if m in sys.modules])))
tool = sys.argv.pop(1)
sys.argv[0] = f"litlab-{tool}"
importlib.import_module(f"litlab.cli.{tool}").main()
"""


def run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """litlab-train as a new user runs it: from `cwd`, logs under `cwd/logs`."""
    env = {k: v for k, v in os.environ.items() if k != "LITLAB_ROOT"} | {"HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [*cli_command("litlab-train"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def imports_of(
    *args: str, cwd: Path, tool: str = "train"
) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "LITLAB_ROOT"} | {"HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "-c", REPORTING_IMPORTS, tool, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("imported:")]
    return result, json.loads(line.removeprefix("imported:"))


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under `folder`."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def a_run(folder: Path) -> Path:
    """A run directory as litlab-train leaves one, with a checkpoint to resume."""
    run = folder / "logs" / "train" / "runs" / "2026-01-01_00-00-00_abcdef"
    cfg = litlab.compose("train", [f"paths.output_dir={run}"])
    for name, text in [
        (".hydra/config.yaml", OmegaConf.to_yaml(cfg)),
        (".hydra/overrides.yaml", "[]\n"),
        ("config.yaml", OmegaConf.to_yaml(cfg)),
        ("train.log", "a log\n"),
        ("checkpoints/last.ckpt", "weights"),
    ]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    return run


def refusals(run: Path, empty: Path) -> list[tuple[list[str], str]]:
    """Mistaken command lines, each with a fragment of its error line."""
    return [
        (["experiment=nope"], "Could not find 'experiment/nope'"),
        (["model=mlp", "model.net.activation=gelu"], "model.net.activation='gelu' is not one of"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is not a positive integer"),
        (["data.batch_size=0"], "data.batch_size=0 must be a positive integer"),
        (
            ["model=mlp", "model.net.dropout=1.5"],
            "model.net.dropout=1.5 must be a number in [0, 1)",
        ),
        (["data.num_workers=-2"], "data.num_workers=-2 must be a non-negative integer"),
        (["float32_matmul_precision=tf32"], "is not one of highest, high, medium"),
        (["model.optimizer.lrr=0.1"], "Could not override 'model.optimizer.lrr'"),
        (["-m", "model.optimizer.lrr=0.01,0.1"], "use +model.optimizer.lrr="),
        (["hparams_search=mnist_optuna", "model.optimizer.lrr=interval(0.1, 1)"], "cannot sweep"),
        (["-m", "data.batch_size=32,-1"], "data.batch_size=-1 must be a positive integer"),
        (["resume=auto"], "name its directory with hydra.run.dir="),
        (["resume=auto", f"hydra.run.dir={empty}"], "nothing to resume"),
        ([f"hydra.run.dir={run}"], "already holds a run"),
        (["resume=auto", f"hydra.run.dir={run}", "model=mlp"], "model=mlp builds another run"),
    ]


@pytest.mark.parametrize("case", range(len(refusals(Path(), Path()))))
def test_a_mistake_is_one_line_before_torch_is_imported_and_writes_nothing(tmp_path, case):
    run, empty = a_run(tmp_path), tmp_path / "empty"
    empty.mkdir()
    args, fragment = refusals(run, empty)[case]
    before = tree(tmp_path)
    result, imported = imports_of(*args, cwd=tmp_path)
    assert fragment in error_line(result)
    assert imported == []
    assert tree(tmp_path) == before  # no new folder, not a byte of the run changed


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["experiment=mlp_relu", "--info"]])
def test_help_and_the_config_come_without_torch(tmp_path, args):
    result, imported = imports_of(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert imported == [] and list(tmp_path.iterdir()) == []
    if args == ["--cfg", "job"]:
        assert OmegaConf.create(result.stdout.split("imported:")[0]).seed == 42


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("eval", ["trainer=nope"], "Could not find 'trainer/nope'"),
        ("export", ["formats=onnx"], "Could not override 'formats'"),
        ("predict", ["batch_sise=3"], "Could not override 'batch_sise'"),
    ],
)
def test_the_other_entry_points_refuse_a_config_mistake_before_torch(tmp_path, tool, args, message):
    result, imported = imports_of(*args, cwd=tmp_path, tool=tool)
    assert message in error_line(result)
    assert imported == [] and list(tmp_path.iterdir()) == []


PROJECT_MODEL = """\
_target_: litlab.models.Classifier
_recursive_: false
net:
  _target_: my_nets.TinyCNN
  input_shape: ${data.input_shape}
  num_classes: ${data.num_classes}
  width: 8
num_classes: ${data.num_classes}
"""


def test_a_project_s_own_configs_are_checked_before_torch_too(tmp_path):
    """--config-dir adds a project's configs: its own classes take their own settings, and
    litlab's are still checked."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "tiny_cnn.yaml").write_text(PROJECT_MODEL)
    (tmp_path / "my_nets.py").write_text(  # read for its settings, never imported here
        "from torch import nn\n\n\nclass TinyCNN(nn.Module):\n"
        "    def __init__(self, input_shape, num_classes, width: int = 8):\n"
        "        super().__init__()\n"
    )
    shown, imported = imports_of(
        "--config-dir=conf", "model=tiny_cnn", "--cfg", "job", cwd=tmp_path
    )
    assert shown.returncode == 0 and imported == [], shown.stderr[-3000:]
    assert "my_nets.TinyCNN" in shown.stdout
    for args, message in [
        (["model=tiny_cnn", "model.num_classes=0"], "model.num_classes=0 must be a positive"),
        (["-m", "model=tiny_cnn", "model.net.width=4,8", "data.batch_size=0"], "data.batch_size=0"),
        (["model=tiny"], "Could not find 'model/tiny'"),
    ]:
        result, imported = imports_of("--config-dir=conf", *args, cwd=tmp_path)
        assert message in error_line(result) and imported == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "my_nets.py"]


def test_a_run_refused_once_hydra_made_its_directory_leaves_no_folder(tmp_path):
    """Missing data shows only when the data module looks for its files."""
    result = run_train(f"paths.data_dir={tmp_path / 'nodata'}", "debug=fdr", cwd=tmp_path)
    assert "MNIST not found" in error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_run_into_a_directory_of_its_own_keeps_that_directory(tmp_path):
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = run_train(
        f"paths.data_dir={tmp_path / 'nodata'}", "debug=fdr", f"hydra.run.dir={mine}", cwd=ROOT
    )
    assert "MNIST not found" in error_line(result)
    assert (mine / "notes.txt").read_text() == "mine"


def test_the_run_goes_where_a_fresh_run_would(tmp_path):
    """The checked run directory is the one Hydra makes: logs/train/runs/<time>_<id>."""
    need_data("MNIST")
    result = run_train(
        "experiment=mlp_relu", "debug=fdr", f"paths.data_dir={DATA_DIR}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert OmegaConf.load(run / "config.yaml").paths.output_dir == str(run)
    # What a run wrote by default before its checks moved ahead, it still writes.
    for name in [
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "train.log",
        "config.yaml",
        "metrics.json",
        "checkpoints/last.ckpt",
        "pictures/learning_curves.png",
        "pictures/confusion_matrix.png",
    ]:
        assert (run / name).is_file(), name
    assert "test/acc" in json.loads((run / "metrics.json").read_text())["metrics"]


def test_everything_on_by_default_still_is(tmp_path):
    cfg = litlab.compose("train", [f"paths.output_dir={tmp_path}"])
    assert set(cfg.callbacks) == {
        "model_checkpoint",
        "early_stopping",
        "model_summary",
        "rich_progress_bar",
        "run_pictures",
    }
    assert cfg.callbacks.model_checkpoint.save_last and list(cfg.logger) == ["csv"]
    assert (cfg.train, cfg.test, cfg.trainer.max_epochs) == (True, True, 5)


# Runs litlab-train, counting the configs Hydra composes.
COUNTING_COMPOSITIONS = """
import atexit, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
composed = []
load = ConfigLoaderImpl.load_configuration
ConfigLoaderImpl.load_configuration = lambda *a, **k: composed.append(1) or load(*a, **k)
atexit.register(lambda: print("compositions:", len(composed)))
sys.argv[0] = "litlab-train"
from litlab.cli.train import main
main()
"""


def test_a_single_run_is_composed_once(tmp_path, mnist):
    result = subprocess.run(
        [sys.executable, "-c", COUNTING_COMPOSITIONS, "experiment=mlp_relu", "debug=fdr"],
        cwd=tmp_path,
        env=os.environ | {"LITLAB_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compositions: 1" in result.stdout.splitlines()
    assert len(list(tmp_path.glob("logs/train/runs/*/metrics.json"))) == 1


def test_the_entry_point_keeps_no_state_and_leaves_the_command_line_alone():
    import ast

    import litlab.cli.train

    tree = ast.parse(Path(litlab.cli.train.__file__).read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Global | ast.Nonlocal), ast.unparse(node)
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.argv":
            assert isinstance(node.ctx, ast.Load), "writes sys.argv"
        if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("sys.argv."):
            raise AssertionError(f"changes sys.argv: {ast.unparse(node)}")
    for node in tree.body:  # module-level values: constants only
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            assert not isinstance(value, ast.List | ast.Dict | ast.Set), ast.unparse(node)
