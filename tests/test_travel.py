"""Runs that travel: a run or sweep directory copied or moved (rsync'ed home from a cluster, or
copied to branch an experiment) is resumed, evaluated, predicted, exported and reported where it
now is, and no command writes outside the directory it is given."""

import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, need_data, read_metrics, read_summary, run_cli
from PIL import Image

from litlab.run.checkpoints import load_checkpoint
from litlab.run.directory import RunDir, reroot

# Short real runs; deterministic, so that a resumed run can be held to an uninterrupted one.
RUN = [
    "experiment=mlp_relu",
    "debug=limit",
    "model.net.dropout=0.2",
    "trainer.deterministic=true",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]


def files(root: Path) -> dict[str, tuple]:
    """Every file and folder below `root`: a file's sha256 and modification time."""
    out = {}
    for path in root.rglob("*"):
        key = str(path.relative_to(root))
        if path.is_file():
            out[key] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            out[key] = ("folder",)
    return out


def written(before: dict, after: dict) -> set[str]:
    """The paths made, changed or deleted between two `files` of one folder."""
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def run_inside(root: Path, allowed: list[Path], tool: str, *args: str, cwd: Path):
    """Run a console script that must succeed and write nothing below `root` outside `allowed`."""
    before = files(root)
    result = run_cli(tool, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    outside = [
        path
        for path in sorted(written(before, files(root)))
        if not any((root / path).is_relative_to(place) for place in allowed)
    ]
    assert not outside, f"{tool} wrote outside {[str(p) for p in allowed]}: {outside}"
    return result


def resume_inside(root: Path, run: Path, cwd: Path):
    """Resume `run` for a second epoch, writing nothing below `root` outside the run."""
    return run_inside(
        root,
        [run],
        "litlab-train",
        "resume=auto",
        f"hydra.run.dir={run}",
        "trainer.max_epochs=2",
        cwd=cwd,
    )


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_copied_run_resumes_in_the_copy_and_the_original_keeps_every_byte(tmp_path, mnist):
    whole = run_cli("litlab-train", *RUN, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'w'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    original, copy = tmp_path / "original", tmp_path / "branch" / "copy"
    first = run_cli("litlab-train", *RUN, "trainer.max_epochs=1", f"hydra.run.dir={original}")
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(original, copy)
    kept = files(original)

    resumed = resume_inside(tmp_path, copy, cwd=tmp_path)
    assert files(original) == kept  # every byte, and not even rewritten
    assert read_metrics(copy) == read_metrics(tmp_path / "w")  # bitwise
    assert "dirpath has changed" not in resumed.stdout + resumed.stderr  # the best so far goes on
    assert str(original) not in (copy / "config.yaml").read_text()
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "w" / "checkpoints").iterdir()
    )


def mnist_png(path: Path) -> Path:
    """The first picture of MNIST's test set (a seven), as a PNG file."""
    raw = (DATA_DIR / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    pixels = np.frombuffer(raw, dtype=np.uint8, count=28 * 28, offset=16).reshape(28, 28)
    Image.fromarray(pixels).save(path)
    return path


def test_a_moved_run_evaluates_predicts_exports_and_resumes_where_it_now_is(tmp_path, mnist):
    home = tmp_path / "home"  # commands run here: a new run goes to home/logs
    home.mkdir()
    picture = mnist_png(tmp_path / "digit.png")
    run_inside(tmp_path, [home / "logs"], "litlab-train", *RUN, "trainer.max_epochs=1", cwd=home)
    [trained] = (home / "logs" / "train" / "runs").iterdir()
    run = tmp_path / "laptop" / "run"
    run.parent.mkdir()
    shutil.move(trained, run)  # as rsync'ed to a machine where the original path does not exist

    evaluated = home / "logs" / "eval"
    limit = "+trainer.limit_test_batches=2"  # as debug=limit tested it
    run_inside(tmp_path, [evaluated], "litlab-eval", f"run_dir={run}", limit, cwd=home)
    [eval_dir] = (evaluated / "runs").iterdir()
    summary = read_summary(eval_dir)
    assert summary["checkpoint"] == str(run / "checkpoints" / "epoch_000.ckpt")
    assert summary["metrics"]["test/acc"] == read_metrics(run)["test/acc"]  # its best, again

    predicted = home / "logs" / "predict"
    result = run_inside(
        tmp_path, [predicted], "litlab-predict", f"run_dir={run}", f"inputs={picture}", cwd=home
    )
    record = json.loads(result.stdout)
    assert record["input"] == str(picture) and record["predicted_class"] in record["probabilities"]

    exported = [run / "export", home / "logs" / "export"]  # the artifact in the run, Hydra's log
    run_inside(
        tmp_path, exported, "litlab-export", f"run_dir={run}", "format=torchscript", cwd=home
    )
    artifact = run / "export" / "torchscript"
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["run_dir"] == str(run) and (artifact / "model.pt").is_file()

    resume_inside(tmp_path, run, cwd=home)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert not trained.exists()  # nothing followed the recorded paths to where it was trained


def test_a_moved_text_run_resumes_and_predicts_with_its_own_tokenizer(tmp_path):
    need_data("bbc_news")
    trained, run = tmp_path / "cluster" / "run", tmp_path / "laptop" / "run"
    text = ["experiment=seed_rnn", "data.max_len=64", *RUN[1:2], *RUN[3:]]
    first = run_cli("litlab-train", *text, "trainer.max_epochs=1", f"hydra.run.dir={trained}")
    assert first.returncode == 0, first.stderr[-3000:]
    run.parent.mkdir()
    shutil.move(trained, run)
    tokenizer = files(run)["tokenizer.json"]

    resume_inside(tmp_path, run, cwd=tmp_path)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert files(run)["tokenizer.json"] == tokenizer  # read where the run is, not fitted anew
    lines = tmp_path / "headlines.txt"
    lines.write_text("Shares fall as the central bank raises interest rates\n")
    predicted = tmp_path / "predicted"
    result = run_inside(
        tmp_path,
        [predicted],
        "litlab-predict",
        f"run_dir={run}",
        f"inputs={lines}",
        f"hydra.run.dir={predicted}",
        cwd=tmp_path,
    )
    record = json.loads(result.stdout)
    assert list(record["probabilities"]) == json.loads((run / "labels.json").read_text())
    assert not trained.exists()


def test_a_copied_grid_sweep_resumes_and_reports_in_the_copy(tmp_path, mnist):
    sweep, copy = tmp_path / "cluster" / "sweep", tmp_path / "laptop" / "sweep"
    command = ["-m", *RUN, "model.optimizer.lr=0.01,0.05"]
    sweep.parent.mkdir()
    run_inside(
        tmp_path,
        [sweep],
        "litlab-train",
        *command,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    shutil.copytree(sweep, copy)
    run_inside(
        tmp_path,
        [copy],
        "litlab-train",
        *command,
        "trainer.max_epochs=2",
        "resume=auto_or_fresh",
        f"hydra.sweep.dir={copy}",
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        assert load_checkpoint(copy / job / "checkpoints" / "last.ckpt")["epoch"] == 1
        assert load_checkpoint(sweep / job / "checkpoints" / "last.ckpt")["epoch"] == 0
    run_inside(tmp_path, [copy], "litlab-report", str(copy), cwd=tmp_path)
    assert (copy / "report.csv").is_file() and not (sweep / "report.csv").exists()


def test_a_recorded_path_outside_the_run_is_never_written(tmp_path, mnist_mlp_run):
    run, elsewhere = tmp_path / "run", tmp_path / "shared" / "csv"
    shutil.copytree(mnist_mlp_run, run)
    config = RunDir(run).config()
    config.logger.csv.save_dir = str(elsewhere)  # as if trained with logger.csv.save_dir=...
    RunDir(run).write_config(config)
    before = files(tmp_path)
    result = run_cli(
        "litlab-train", "resume=auto", f"hydra.run.dir={run}", "trainer.max_epochs=2", cwd=tmp_path
    )
    assert result.returncode == 2 and len(error_lines(result)) == 1, result.stderr[-3000:]
    assert f"would write to {elsewhere}, outside the run directory" in error_lines(result)[0]
    assert not elsewhere.parent.exists()
    changed = written(before, files(tmp_path))
    assert changed and all((tmp_path / p).is_relative_to(run) for p in changed)  # Hydra's log
    assert files(run / "checkpoints") == files(mnist_mlp_run / "checkpoints")


UNREADABLE = {"model: [unclosed": "expected ',' or ']'", "- a list": "not a mapping"}
CASES = [(tool, None) for tool in ("litlab-eval", "litlab-predict", "litlab-export")] + [
    (tool, config)
    for tool in ("litlab-eval", "litlab-predict", "litlab-export", "resume")
    for config in UNREADABLE
]  # resuming a run that wrote no config.yaml yet starts it as configured


@pytest.mark.parametrize(("tool", "config"), CASES)
def test_a_run_whose_config_is_missing_or_unreadable_is_refused(tmp_path, tool, config):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    if config is not None:
        (run / "config.yaml").write_text(config)
    args = {
        "litlab-eval": [f"run_dir={run}"],
        "litlab-predict": [f"run_dir={run}", f"inputs={tmp_path}"],
        "litlab-export": [f"run_dir={run}"],
        "resume": ["resume=auto", f"hydra.run.dir={run}"],
    }[tool]
    before = files(tmp_path)
    result = run_cli("litlab-train" if tool == "resume" else tool, *args, cwd=tmp_path)
    errors = error_lines(result)
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    if config is None:
        assert f"{run} is not a litlab run directory (no config.yaml)" in errors[0]
    else:
        assert f"cannot read {run / 'config.yaml'} ({UNREADABLE[config]}" in errors[0]
    assert files(tmp_path) == before  # nothing written, not even a log folder


@contextmanager
def read_only(folder: Path):
    """`folder` unwritable: by its mode for a user, by `chattr +i` for root (modes do not stop
    root); skipped where neither takes (root on a file system without that attribute)."""
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0 and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)]).returncode == 0
    try:
        if os.access(folder, os.W_OK):
            pytest.skip(f"cannot make {folder} read-only here (root, and no chattr +i)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(mode)


def test_resuming_into_a_directory_that_cannot_be_written_is_refused(tmp_path, mnist_mlp_run):
    run = tmp_path / "run"
    shutil.copytree(mnist_mlp_run, run)
    before = files(tmp_path)
    with read_only(run):
        result = run_cli(
            "litlab-train", "resume=auto", f"hydra.run.dir={run}", "trainer.max_epochs=2"
        )
    errors = error_lines(result)
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert f"cannot write to {run}" in errors[0] and "writable" in errors[0]
    assert files(tmp_path) == before


def test_paths_into_the_run_are_rerooted_and_others_left_alone():
    recorded = {
        "dirpath": "/scratch/run/checkpoints",
        "tracking_uri": "sqlite:////scratch/run/mlflow.db",
        "best_k_models": {"/scratch/run/checkpoints/epoch_003.ckpt": 0.9},
        "data_dir": "/scratch/data",
        "sibling": "/scratch/run2/checkpoints",
        "name": "run",
        "hidden": [256, 128],
    }
    assert reroot(recorded, "/scratch/run", "/home/me/run") == {
        "dirpath": "/home/me/run/checkpoints",
        "tracking_uri": "sqlite:////home/me/run/mlflow.db",
        "best_k_models": {"/home/me/run/checkpoints/epoch_003.ckpt": 0.9},
        "data_dir": "/scratch/data",
        "sibling": "/scratch/run2/checkpoints",
        "name": "run",
        "hidden": [256, 128],
    }
    assert reroot(recorded, "run", "/home/me/run") == recorded  # relative: could be any word
