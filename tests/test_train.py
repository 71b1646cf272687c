import json
import math

import lightning.pytorch as L
import pytest
import torch
from conftest import DATA_DIR, compose, quiet_trainer, read_metrics
from hydra.utils import instantiate

import litlab


def val_loss(trainer: L.Trainer, model, datamodule) -> float:
    return trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/loss"]


@pytest.mark.parametrize(
    "experiment", ["mlp_sigmoid", "mlp_tanh", "mlp_relu", "mlp_mse", "seed_cnn"]
)
def test_each_activation_and_loss_learns(tmp_path, mnist, experiment):
    cfg = compose(tmp_path, f"experiment={experiment}", "data.eval_batch_size=5000")
    L.seed_everything(0)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=60, limit_val_batches=1)
    before = val_loss(trainer, model, datamodule)
    trainer.fit(model, datamodule=datamodule)
    after = val_loss(trainer, model, datamodule)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("model", ["mlp", "cnn", "seed_cnn"])
def test_fast_dev_run_per_model(tmp_path, mnist, model):
    metrics = litlab.train(compose(tmp_path, f"model={model}", "debug=fdr"))
    assert metrics["test/loss"] < 2 * math.log(10)  # one step: about log(10)
    assert (tmp_path / "config.yaml").is_file()
    assert read_metrics(tmp_path) == pytest.approx(metrics)


def test_a_run_sets_the_fp32_matmul_precision(tmp_path, mnist):
    try:
        litlab.train(compose(tmp_path, "model=mlp", "debug=fdr", "float32_matmul_precision=medium"))
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")


def test_mlp_one_epoch_on_real_mnist_reaches_95_percent(tmp_path, mnist):
    metrics = litlab.train(
        compose(tmp_path, "experiment=mlp_relu", "trainer.max_epochs=1", "callbacks=none")
    )
    assert metrics["val/acc"] >= 0.95


def test_train_writes_a_complete_run_directory(tmp_path, mnist):
    litlab.train(compose(tmp_path, "experiment=mlp_relu", "debug=limit", "logger=many"))
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / summary["best_checkpoint"]).is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert summary["metrics"]["val/acc_best"] >= summary["metrics"]["val/acc"] - 1e-9
    resolved = (tmp_path / "config.yaml").read_text()
    assert "${" not in resolved and str(DATA_DIR) in resolved


def test_load_from_checkpoint_rebuilds_the_model(tmp_path, mnist):
    from litlab.models import Classifier

    litlab.train(compose(tmp_path, "model=cnn", "model.net.pool=avg", "debug=limit"))
    model = Classifier.load_from_checkpoint(
        tmp_path / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert type(model.net).__name__ == "CNN"
    assert model.net.features[2].__class__.__name__ == "AvgPool2d"


def test_the_speedrun_steps_its_one_cycle_every_batch_over_the_whole_run(tmp_path, mnist):
    litlab.train(
        compose(
            tmp_path,
            "experiment=speedrun",
            "speed=cpu",
            "+trainer.limit_train_batches=3",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
        )
    )
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    (schedule,) = state["lr_schedulers"]
    assert schedule["total_steps"] == 3  # the run's length, found by itself
    assert schedule["last_epoch"] == 3  # stepped after each of the 3 batches
    (group,) = state["optimizer_states"][0]["param_groups"]
    assert group["betas"] == (0.7, 0.9)  # the cycle leaves Adam's betas as set
