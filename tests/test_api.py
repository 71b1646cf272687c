"""litlab in Python, as a notebook uses it: compose, train (again), load the trained run."""

import subprocess
import sys

import pytest
import torch
from conftest import DATA_DIR, need_data

import litlab


def test_compose_works_in_a_fresh_interpreter(tmp_path):
    """Nothing but `import litlab` before composing, as in a notebook's first cell."""
    code = "import litlab; print(litlab.compose('train', ['paths.log_dir=L']).paths.output_dir)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("L/train/runs/")


def test_compose_and_train_twice_in_one_process(tmp_path):
    """Running a notebook cell again: a second, separate run, with no state left over."""
    need_data("MNIST")
    overrides = [
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={DATA_DIR}",
        "experiment=mlp_relu",
        "debug=limit",
        "trainer.max_epochs=1",
        "callbacks.rich_progress_bar=null",
    ]
    first, second = (litlab.train(litlab.compose("train", overrides)) for _ in range(2))
    assert first.run_dir != second.run_dir
    assert first.run_dir.parent == second.run_dir.parent == tmp_path / "train" / "runs"
    for run in (first, second):
        assert (run.run_dir / "metrics.json").is_file()
        assert (run.run_dir / "checkpoints" / "last.ckpt").is_file()
    assert dict(first) == pytest.approx(dict(second))  # same seed, same data: the same run


def test_load_run_gives_back_the_trained_model(mnist_mlp_run):
    trained = litlab.load_run(mnist_mlp_run)
    assert trained.run_dir == mnist_mlp_run and not trained.model.training
    assert trained.checkpoint.parent == mnist_mlp_run / "checkpoints"
    assert trained.config.model.net._target_ == "litlab.nets.MLP"
    state = torch.load(trained.checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(
        trained.model.state_dict()["net.layers.1.weight"], state["net.layers.1.weight"]
    )


def test_load_run_of_a_directory_that_is_no_run(tmp_path):
    with pytest.raises(litlab.LitlabError, match="is not a litlab run directory"):
        litlab.load_run(tmp_path)


def test_a_run_directory_is_found_by_its_checkpoint_and_names_its_best(mnist_mlp_run):
    from litlab.run.directory import RunDir

    best = RunDir(mnist_mlp_run).checkpoint()
    assert best.is_file() and best != RunDir(mnist_mlp_run).last  # metrics.json names it
    run = RunDir.named(None, best)
    assert run.path == mnist_mlp_run.resolve() and run.checkpoint() == best.resolve()
    assert run.metrics()["test/acc"] > 0.85  # one epoch on 20,000 images: about 0.94
    assert run.config().model.net._target_ == "litlab.nets.MLP"
    with pytest.raises(litlab.LitlabError, match="say which run to use"):
        RunDir.named(None, None)
