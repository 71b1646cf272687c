"""The training step litlab's models take themselves, and the metrics they sum on the device:
the same training as Lightning's automatic loop, and every default still on."""

import csv
import ctypes
import os
from functools import partial

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from conftest import compose, quiet_trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import litlab
from litlab.models import Classifier
from litlab.nets import MLP, SeedCNN
from litlab.speed import ask_cuda_without_nvml_where_no_driver, without_idle_batch_hooks
from litlab.training.console import ProgressBar
from litlab.training.pictures import RunPictures
from litlab.training.tasks import build_trainer


def data(n: int = 96, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=generator), torch.arange(n) % 10)


def fit(tmp_path, epochs: int = 2, **trainer_options) -> tuple[Classifier, L.Trainer]:
    torch.manual_seed(0)
    model = Classifier(
        net=MLP(hidden=(16,)),
        optimizer=partial(torch.optim.Adam, lr=1e-2),
        scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    trainer = quiet_trainer(max_epochs=epochs, default_root_dir=tmp_path, **trainer_options)
    trainer.fit(model, DataLoader(data(), batch_size=32), DataLoader(data(40, 1), batch_size=32))
    return model, trainer


def test_the_models_own_step_trains_as_lightnings_automatic_loop(tmp_path):
    ours, trainer = fit(tmp_path)
    # a clipping norm no gradient reaches: Lightning's own loop, the same arithmetic
    theirs, automatic = fit(tmp_path, gradient_clip_val=1e9)
    assert not ours.automatic_optimization and theirs.automatic_optimization
    assert trainer.global_step == automatic.global_step == 6
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, reference)
    # the epoch schedule stepped once after each epoch's last batch
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 / 4)
    assert trainer.callback_metrics["train/acc"] == automatic.callback_metrics["train/acc"]


def test_gradient_accumulation_takes_one_step_per_group_of_batches(tmp_path):
    model, trainer = fit(tmp_path, epochs=1, accumulate_grad_batches=3)
    assert model.automatic_optimization and trainer.global_step == 1


def test_bf16_autocast_trains_through_the_models_own_step(tmp_path):
    model, trainer = fit(tmp_path, epochs=1, precision="bf16-mixed")
    assert not model.automatic_optimization and trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("clip", [None, 1.0])
def test_speed_is_applied_to_a_model_from_outside_by_any_trainer(tmp_path, clip):
    """A LitModule holds its step, loss and metrics; `model.channels_last` and the step are done
    by the Speed callback it hands a bare Trainer, which also lets bf16 clip a fused Adam."""
    torch.manual_seed(0)
    model = Classifier(
        net=SeedCNN(), optimizer=partial(torch.optim.Adam, lr=1e-3, fused=True), channels_last=True
    )

    def conv():  # the second convolution's weight: 32 channels in, a format to tell apart
        return [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)][1].weight

    assert not conv().is_contiguous(memory_format=torch.channels_last)
    trainer = quiet_trainer(
        max_epochs=1, default_root_dir=tmp_path, precision="bf16-mixed", gradient_clip_val=clip
    )
    trainer.fit(model, DataLoader(data(), batch_size=32))
    assert conv().is_contiguous(memory_format=torch.channels_last)
    assert model.automatic_optimization is (clip is not None) and trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_the_epoch_metrics_are_means_over_every_example(tmp_path):
    """Batches of 32, 32 and 6: each example counts once, whatever its batch."""
    torch.manual_seed(0)
    model = Classifier(net=MLP(hidden=(16,)), optimizer=partial(torch.optim.SGD, lr=0.1))
    examples = data(70)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    (metrics,) = trainer.validate(model, DataLoader(examples, batch_size=32), verbose=False)
    x, y = examples.tensors
    with torch.no_grad():
        logits = model(x)
    assert metrics["val/acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert metrics["val/loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)


def test_a_default_run_keeps_its_metrics_checkpoints_progress_bar_and_pictures(tmp_path, mnist):
    cfg = compose(tmp_path, "model=mlp", "debug=limit")
    kinds = {type(callback) for callback in build_trainer(cfg).callbacks}
    assert {ProgressBar, ModelCheckpoint, EarlyStopping, RunPictures} <= kinds
    litlab.train(cfg)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for key in ("train/acc", "train/loss", "val/acc", "val/loss"):
        assert {int(row["epoch"]) for row in rows if row[key]} == {0, 1, 2}, key
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "pictures" / "learning_curves.png").is_file()
    assert (tmp_path / "pictures" / "confusion_matrix.png").is_file()


def test_cuda_is_asked_for_without_nvml_only_where_no_driver_could_answer(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning sets it
    seen = torch.cuda.is_available()
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        driver = True
    except OSError:
        driver = False
    ask_cuda_without_nvml_where_no_driver()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == ("1" if driver else "0")
    assert torch.cuda.is_available() == seen


class CountingBatches(Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1


def test_callbacks_keep_the_batch_hooks_they_override_and_skip_the_empty_ones(tmp_path, mnist):
    counting = without_idle_batch_hooks(CountingBatches())
    assert counting.on_before_backward is None and callable(counting.on_train_batch_end)
    _, trainer = fit(tmp_path, callbacks=[counting])
    assert counting.batches == trainer.global_step == 6
    # litlab's trainer does the same to every callback, Lightning's own among them
    callbacks = build_trainer(compose(tmp_path, "model=mlp")).callbacks
    by_kind = {type(callback): callback for callback in callbacks}
    assert callable(by_kind[ModelCheckpoint].on_train_batch_end)
    assert by_kind[EarlyStopping].on_train_batch_end is None
    assert all(callback.on_before_optimizer_step is None for callback in callbacks)
