"""The console scripts as a user runs them: round trip through a run directory, and bad input."""

import pickle

import pytest
import torch
from conftest import DATA_DIR, need_data, read_metrics, run_cli

QUICK = ["debug=limit", "trainer.max_epochs=1", f"paths.data_dir={DATA_DIR}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short real runs, an MLP and a CNN, through litlab-train."""
    need_data("MNIST")
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, experiment in [("mlp", "mlp_relu"), ("cnn", "cnn_avgpool")]:
        run_dir = root / name
        result = run_cli(
            "litlab-train", f"experiment={experiment}", *QUICK, f"hydra.run.dir={run_dir}"
        )
        assert result.returncode == 0, result.stderr[-2000:]
        out[name] = run_dir
    return out


def test_train_then_eval_round_trip(runs, tmp_path):
    result = run_cli(
        "litlab-eval",
        f"run_dir={runs['cnn']}",
        f"hydra.run.dir={tmp_path}",
        "+trainer.limit_test_batches=2",
    )  # as debug=limit tested it
    assert result.returncode == 0, result.stderr[-2000:]
    # The best checkpoint, evaluated again with the run's own config: the same test numbers.
    assert read_metrics(tmp_path)["test/acc"] == pytest.approx(
        read_metrics(runs["cnn"])["test/acc"]
    )


def test_a_limited_test_says_it_is_partial_and_eval_tests_all(runs, tmp_path):
    """debug=limit tests 2 batches of 1,000 images; litlab-eval then the whole test split:
    each says what it measured, in its log and in its metrics.json."""
    trained = read_metrics(runs["mlp"])
    assert (trained["test/samples"], trained["test/samples_total"]) == (2000, 10_000)
    log = (runs["mlp"] / "train.log").read_text()
    assert "on 2,000 of 10,000 test inputs, a partial test" in log
    result = run_cli("litlab-eval", f"run_dir={runs['mlp']}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on all 10,000 test inputs" in result.stdout + result.stderr
    evaluated = read_metrics(tmp_path)
    assert evaluated["test/samples"] == evaluated["test/samples_total"] == 10_000


def test_eval_by_checkpoint_path_finds_its_run(runs, tmp_path):
    ckpt = runs["mlp"] / "checkpoints" / "last.ckpt"
    result = run_cli("litlab-eval", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(tmp_path)["test/acc"] > 0.5  # 20 steps of training; chance is 0.1


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]


def test_checkpoint_of_another_model_is_refused(runs, tmp_path):
    other = runs["mlp"] / "checkpoints" / "last.ckpt"
    result = run_cli(
        "litlab-eval", f"run_dir={runs['cnn']}", f"ckpt_path={other}", f"hydra.run.dir={tmp_path}"
    )
    assert_one_line_error(result, "holds a different model", "litlab.nets.CNN")
    assert not (tmp_path / "metrics.json").exists()


def test_a_checkpoint_that_would_run_code_is_refused(runs, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {}, "payload": Exploit()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    result = run_cli(
        "litlab-eval",
        f"run_dir={runs['cnn']}",
        f"ckpt_path={evil}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert_one_line_error(result, "is not a loadable checkpoint")
    assert not marker.exists()


def test_eval_of_a_directory_that_is_no_run(tmp_path):
    result = run_cli("litlab-eval", f"run_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert_one_line_error(result, "is not a litlab run directory")


def test_unknown_experiment(tmp_path):
    result = run_cli("litlab-train", "experiment=nope", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "Could not find 'experiment/nope'", "seed_cnn")  # what exists
    assert result.returncode == 2 and "search path" not in result.stderr


def test_non_integer_epochs(tmp_path):
    result = run_cli("litlab-train", "trainer.max_epochs=abc", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "trainer.max_epochs='abc' is not a positive integer")
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_matmul_precision(tmp_path):
    result = run_cli("litlab-train", "float32_matmul_precision=tf32", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "float32_matmul_precision='tf32' is not one of highest")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the GPU it asks for")
def test_gpu_settings_without_a_gpu(tmp_path):
    result = run_cli("litlab-train", "speed=gpu", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "trainer.accelerator=gpu but torch sees no CUDA GPU", "speed=cpu")
    assert not (tmp_path / "checkpoints").exists()


def test_missing_data_with_no_way_to_fetch(tmp_path):
    result = run_cli(
        "litlab-train", f"paths.data_dir={tmp_path / 'nodata'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_one_line_error(result, "MNIST not found", "litlab-data mnist")


def test_corrupt_idx_file_is_reported(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (DATA_DIR / "MNIST" / "raw").iterdir():
        (raw / f.name).symlink_to(f)
    (raw / "t10k-images-idx3-ubyte").unlink()
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file")
    result = run_cli(
        "litlab-train",
        "debug=fdr",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "t10k-images-idx3-ubyte is not an unsigned-byte IDX file")


def test_unknown_dataset_for_litlab_data(tmp_path):
    result = run_cli("litlab-data", "cifar10", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "invalid choice: 'cifar10'" in result.stderr


def test_a_model_without_its_experiment_names_the_monitor_to_set(tmp_path):
    result = run_cli(
        "litlab-train",
        "model=vae_mlp",
        "data.mean=0",
        "data.std=1",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={tmp_path}",
    )
    assert_one_line_error(result, "monitor=val/acc is not logged by VAE", "experiment=vae_mlp")


def test_a_missing_mandatory_value(tmp_path):
    result = run_cli("litlab-train", "data=text", "model=lstm", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "Missing mandatory value: data.")


def test_resuming_from_a_missing_checkpoint(tmp_path):
    result = run_cli(
        "litlab-train",
        f"ckpt_path={tmp_path / 'nope.ckpt'}",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_one_line_error(result, "no checkpoint at")


def test_test_only_run_uses_the_given_checkpoint(runs, tmp_path):
    result = run_cli(
        "litlab-train",
        "experiment=mlp_relu",
        *QUICK,
        "train=false",
        f"ckpt_path={runs['mlp'] / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(tmp_path)["test/acc"] == pytest.approx(
        read_metrics(runs["mlp"])["test/acc"]
    )
