"""A run from elsewhere is data, not code: every command that opens a run (eval, predict,
export, resume, litlab.load_run, and a sweep's continuation and report) checks its config.yaml
before anything is built, and a doctored one is refused in one line with nothing written."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DATA_DIR, compose, run_cli
from test_startup import error_line, imports_of
from test_travel import error_lines, files

import litlab
from litlab import CONFIG_DIR
from litlab.config.trust import check_run_targets, named, target_problem
from litlab.errors import LitlabError
from litlab.run.directory import RunDir

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
LOGGERS = [[], ["logger=many"], ["logger=mlflow"], ["logger=wandb"], ["speed=cpu"]]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_run_litlab_wrote_is_trusted_for_every_shipped_experiment(tmp_path, experiment):
    """Text runs (tokenizer paths), pretraining runs and every logger's settings included."""
    for i, extra in enumerate(LOGGERS):
        run = RunDir(tmp_path / f"run{i}")
        run.write_config(compose(run.path, f"experiment={experiment}", *extra))
        run.config()  # refuses with a LitlabError


def pwned(path: Path) -> dict[str, dict]:
    """Each way a run's config.yaml may be doctored to write `path` when the run is built: the
    dotted key of the section it goes into, the keys it adds there, and what the one error
    line says."""
    touch = ["touch", str(path)]
    return {
        "builtins.open": (
            "data",
            {"pwn": {"_target_": "builtins.open", "file": str(path), "mode": "w"}},
            "data.pwn._target_=builtins.open is no class defined in Python source",
        ),
        "os.system": (
            "model.net",
            {"pwn": {"_target_": "os.system", "command": " ".join(touch)}},
            "model.net.pwn._target_=os.system is no class defined in Python source",
        ),
        "subprocess.Popen": (
            "model",
            {"pwn": {"_target_": "subprocess.Popen", "args": touch}},
            "model.pwn._target_=subprocess.Popen is a class of subprocess, which runs programs",
        ),
        "under _partial_": (
            "model.optimizer",  # a _partial_ factory: Hydra builds what it holds at once
            {"foreach": {"_target_": "builtins.open", "file": str(path), "mode": "w"}},
            "model.optimizer.foreach._target_=builtins.open is no class",
        ),
        "a callback": (
            "callbacks",
            {"pwn": {"_target_": "subprocess.Popen", "args": touch}},
            "callbacks.pwn._target_=subprocess.Popen is a class of subprocess",
        ),
        "a logger": (
            "logger",
            {"pwn": {"_target_": "torch.utils.tensorboard.SummaryWriter", "log_dir": str(path)}},
            "logger.pwn._target_=torch.utils.tensorboard.SummaryWriter is a class of "
            "torch.utils.tensorboard.writer, not one litlab trusts",
        ),
        "the trainer": (
            "trainer",
            {"plugins": [{"_target_": "os.system", "command": " ".join(touch)}]},
            "trainer.plugins[0]._target_=os.system is no class",
        ),
        "LambdaLR's lr_lambda": (
            "model",  # LambdaLR calls lr_lambda(0) as it is made: open(path, "wb", 0)
            {
                "scheduler": {
                    "_target_": "torch.optim.lr_scheduler.LambdaLR",
                    "_partial_": True,
                    "lr_lambda": {
                        "_target_": "builtins.open",
                        "_partial_": True,
                        "_args_": [str(path), "wb"],
                    },
                }
            },
            "model.scheduler.lr_lambda._target_=builtins.open is no class",
        ),
        "a resolver": (
            "model.net",  # oc.decode would make a target of a string
            {"pwn": f"${{oc.decode:'{{_target_: builtins.open, file: {path}, mode: w}}'}}"},
            "model.net.pwn=${oc.decode:",
        ),
        "an unknown key, trusted": (
            "data",  # trust_run=true lets the class through; the key is still no setting
            {"pwn": {"_target_": "torch.utils.tensorboard.SummaryWriter", "log_dir": str(path)}},
            "data.pwn is not a setting of litlab.data.MNISTDataModule",
        ),
    }


CASES = list(pwned(Path("PWNED")))


def doctor(run: Path, section: str, added: dict) -> None:
    """Add `added` to `section` of the run's config.yaml, as an editor would."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    node = config
    for key in section.split("."):
        node = node[key]
    node.update(added)
    (run / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("case", CASES)
def test_a_doctored_run_is_refused_by_every_command_and_writes_nothing(
    tmp_path, mnist_mlp_run, case
):
    target = tmp_path / "PWNED"
    section, added, message = pwned(target)[case]
    run = tmp_path / "run"
    shutil.copytree(mnist_mlp_run, run)
    doctor(run, section, added)
    picture = tmp_path / "digit.png"
    picture.write_bytes(b"\x89PNG")
    trust = ["trust_run=true"] if "trusted" in case else []
    commands = {
        "litlab-eval": [f"run_dir={run}", *trust],
        "litlab-predict": [f"run_dir={run}", f"inputs={picture}", *trust],
        "litlab-export": [f"run_dir={run}", "format=torchscript", *trust],
        "litlab-train": ["resume=auto", f"hydra.run.dir={run}", "trainer.max_epochs=2", *trust],
    }
    before = files(tmp_path)
    for tool, args in commands.items():
        result = run_cli(tool, *args, cwd=tmp_path)
        errors = error_lines(result)
        assert result.returncode == 2 and len(errors) == 1, (tool, result.stderr[-3000:])
        assert errors[0].startswith(f"error: {run / 'config.yaml'}: {message}"), (tool, errors)
        assert not target.exists(), tool
        assert files(tmp_path) == before, tool  # not even a log folder
    with pytest.raises(LitlabError, match="^" + str(run / "config.yaml")) as refused:
        litlab.load_run(run, trust_run=bool(trust))
    assert message in str(refused.value)
    assert not target.exists() and files(tmp_path) == before


def test_each_refusal_says_how_to_trust_the_run_unless_nothing_can(tmp_path):
    line = target_problem("torch.utils.tensorboard.SummaryWriter", trusted=False)
    assert "pass trust_run=true (trust_run=True for litlab.load_run)" in line
    assert target_problem("torch.utils.tensorboard.SummaryWriter", trusted=True) is None
    never = ("builtins.open", "builtins.eval", "builtins.exec", "os.system", "os.popen")
    for target in (*never, "subprocess.Popen", "subprocess.run", "threading.Thread"):
        assert "refused even with trust_run=true" in target_problem(target, trusted=True), target
    assert "names a module that is not here (eval)" in target_problem("eval", trusted=True)
    for doctored, (section, added, _) in pwned(tmp_path / "PWNED").items():
        if "trusted" not in doctored and "logger" not in doctored:
            config = {"model": {"net": {}, "optimizer": {}}, "data": {}, "callbacks": {}}
            config |= {"trainer": {}, "logger": {}}
            node = config
            for key in section.split("."):
                node = node[key]
            node.update(added)
            with pytest.raises(LitlabError, match="refused even with trust_run=true"):
                check_run_targets(config, trusted=True)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("litlab.data.base.os.system", "no class"),  # a module's import of os, reached through
        ("litlab.nets.mlp.torch.load", "no class"),
        ("torch.load", "is a function"),
        ("torchvision.models.resnet18", "is a function"),
        ("torch.nn.Linear.forward", "an attribute or a value"),
        ("torch.nn", "is a module"),
        ("${oc.env:TARGET}", "is an interpolation"),
        ("lightning.pytorch.cli.LightningCLI", "is a class of lightning.pytorch.cli, not one"),
    ],
)
def test_what_is_no_class_of_a_trusted_package_is_refused(target, why):
    assert why in target_problem(target, trusted=False)


def test_the_classes_runs_are_made_of_are_read_as_classes_without_torch():
    for target in (
        "torch.nn.Linear",  # torch.nn star-imports its modules
        "torch.optim.Adam",
        "torch.optim.lr_scheduler.LambdaLR",
        "lightning.pytorch.Trainer",
        "lightning.pytorch.loggers.MLFlowLogger",
        "torchvision.transforms.Normalize",
        "torchmetrics.Accuracy",
        "litlab.training.pictures.RunPictures",
    ):
        assert named(target).kind == "class", target
        assert target_problem(target, trusted=False) is None, target
    code = (
        "import sys; from litlab.config.trust import named; "
        "print(named('torch.nn.Linear').kind, 'torch' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.stdout.split() == ["class", "False"], shown.stderr


def test_a_project_names_its_own_modules_in_litlab_yaml(tmp_path, monkeypatch, mnist_mlp_run):
    (tmp_path / "tiny_trust_nets.py").write_text(
        "from torch import nn\n\n"
        "class Tiny(nn.Linear):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__(784, num_classes)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    shutil.copytree(mnist_mlp_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    net = {"_target_": "tiny_trust_nets.Tiny", "input_shape": [1, 28, 28], "num_classes": 10}
    config["model"]["net"] = net
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(LitlabError) as refused:
        RunDir(run).config()
    assert "model.net._target_=tiny_trust_nets.Tiny is a class of tiny_trust_nets" in str(
        refused.value
    )
    assert "name your project's module in litlab.yaml (modules: [tiny_trust_nets])" in str(
        refused.value
    )
    (tmp_path / "litlab.yaml").write_text("modules: [tiny_trust_nets]\n")
    assert RunDir(run).config().model.net._target_ == "tiny_trust_nets.Tiny"
    (tmp_path / "litlab.yaml").write_text("modules: tiny_trust_nets\n")
    with pytest.raises(LitlabError, match="modules must be a list of module names"):
        RunDir(run).config()


def sweep_of(tmp_path: Path, trained: Path) -> Path:
    """A sweep directory of two jobs as litlab-train -m writes them (job 1 to be doctored)."""
    sweep = tmp_path / "sweep"
    for job, lr in (("0", "0.01"), ("1", "0.05")):
        shutil.copytree(trained, sweep / job)
        (sweep / job / ".hydra").mkdir()
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={lr}\n")
        RunDir(sweep / job).write_config(RunDir(sweep / job).config())
    return sweep


def test_a_doctored_sweep_is_neither_continued_nor_reported(tmp_path, mnist_mlp_run):
    target = tmp_path / "PWNED"
    sweep = sweep_of(tmp_path, mnist_mlp_run)
    assert run_cli("litlab-report", str(sweep), cwd=tmp_path).returncode == 0
    (sweep / "report.csv").unlink()
    for path in sweep.glob("report_*.png"):
        path.unlink()
    section, added, message = pwned(target)["a callback"]
    doctor(sweep / "1", section, added)
    before = files(tmp_path)
    continued = [
        "-m",
        "experiment=mlp_relu",
        "debug=limit",
        "model.optimizer.lr=0.01,0.05",
        "resume=auto_or_fresh",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={DATA_DIR}",
    ]
    for tool, args in (("litlab-report", [str(sweep)]), ("litlab-train", continued)):
        result = run_cli(tool, *args, cwd=tmp_path)
        errors = error_lines(result)
        assert result.returncode == 2 and len(errors) == 1, (tool, result.stderr[-3000:])
        assert errors[0].startswith(f"error: {sweep / '1' / 'config.yaml'}: {message}"), errors
        assert not target.exists() and files(tmp_path) == before, tool


@pytest.mark.parametrize("tool", ["eval", "predict", "export", "train"])
def test_a_doctored_run_is_refused_before_torch_is_imported(tmp_path, tool):
    """The check reads sources; it imports none of what it reads (the start-up benchmark times
    it)."""
    run = RunDir(tmp_path / "run")
    run.write_config(compose(run.path, "experiment=mlp_relu"))
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / "last.ckpt").write_bytes(b"")
    section, added, message = pwned(tmp_path / "PWNED")["builtins.open"]
    doctor(run.path, section, added)
    args = {
        "eval": [f"run_dir={run.path}"],
        "predict": [f"run_dir={run.path}", f"inputs={tmp_path}"],
        "export": [f"run_dir={run.path}"],
        "train": ["resume=auto", f"hydra.run.dir={run.path}"],
    }[tool]
    before = files(tmp_path)
    result, imported = imports_of(*args, cwd=tmp_path, tool=tool)
    assert message in error_line(result) and imported == []
    assert files(tmp_path) == before


def test_a_litlab_yaml_that_comes_with_the_run_counts_for_nothing(tmp_path, mnist_mlp_run):
    """Run from inside a doctored run (or its sweep), its own litlab.yaml does not make the
    module it brings a project's."""
    target = tmp_path / "PWNED"
    sweep = tmp_path / "sweep"
    run = sweep / "0"
    shutil.copytree(mnist_mlp_run, run)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["net"] = {"_target_": "brought.Net"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for folder in (run, sweep):
        (folder / "litlab.yaml").write_text("modules: [brought]\n")
        (folder / "brought.py").write_text(f"open({str(target)!r}, 'w')\n\nclass Net:\n    pass\n")
    before = files(tmp_path)
    for cwd in (run, sweep):
        result = run_cli("litlab-eval", f"run_dir={run}", cwd=cwd)
        errors = error_lines(result)
        assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
        assert (
            "model.net._target_=brought.Net is a class of brought, not one litlab trusts"
            in (errors[0])
        )
        assert "modules: [brought]" not in errors[0]  # no hint to trust what came along
        assert not target.exists() and files(tmp_path) == before


def test_trust_run_is_true_or_false(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config(compose(run.path, "experiment=mlp_relu"))
    before = files(tmp_path)
    result = run_cli("litlab-eval", f"run_dir={run.path}", "trust_run=yes", cwd=tmp_path)
    assert "trust_run=yes must be true or false" in error_line(result)
    assert files(tmp_path) == before
