"""The pictures every run draws: learning curves, and a confusion matrix of the test set."""

import csv
import json

import pytest
from conftest import compose, need_data, quiet_trainer, read_metrics
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from litlab.training import pictures
from litlab.training.pictures import RunPictures


def read_confusion(run_dir):
    with (run_dir / "pictures" / "confusion_matrix.csv").open() as f:
        header, *rows = list(csv.reader(f))
    return header[1:], [row[0] for row in rows], [[int(n) for n in row[1:]] for row in rows]


@pytest.mark.parametrize("run", ["mnist_mlp_run", "bbc_lstm_run"])
def test_a_classifier_run_draws_its_pictures(request, run):
    run_dir = request.getfixturevalue(run)
    for name in ("learning_curves", "confusion_matrix"):
        with Image.open(run_dir / "pictures" / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 200
    predicted, true, counts = read_confusion(run_dir)
    names = json.loads((run_dir / "labels.json").read_text()) if run == "bbc_lstm_run" else None
    assert predicted == true == (names or list("0123456789"))
    total = sum(map(sum, counts))
    if run == "mnist_mlp_run":
        assert total == 10_000  # the whole test set
    correct = sum(counts[i][i] for i in range(len(counts)))
    assert correct / total == pytest.approx(read_metrics(run_dir)["test/acc"], abs=1e-6)


def test_learning_curves_hold_what_was_logged_each_epoch(tmp_path):
    need_data("MNIST")
    cfg = compose(tmp_path, "experiment=mlp_relu")
    drawn = RunPictures(str(tmp_path / "pictures"))
    trainer = quiet_trainer(
        max_epochs=3,
        limit_train_batches=5,
        limit_val_batches=1,
        callbacks=[drawn],
        logger=CSVLogger(tmp_path, name="", version=""),
    )
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    logged = {}
    for row in csv.DictReader((tmp_path / "metrics.csv").open()):
        for key, value in row.items():
            if value and key.startswith(("train/", "val/")) and key != "train/loss_step":
                logged.setdefault(key, {})[int(row["epoch"])] = float(value)
    del logged["val/acc_best"]
    assert (
        drawn.history.keys() == logged.keys() == {"train/loss", "train/acc", "val/loss", "val/acc"}
    )
    for key, values in logged.items():
        assert sorted(values) == [0, 1, 2]
        assert drawn.history[key] == pytest.approx(values)
    assert (tmp_path / "pictures" / "learning_curves.png").is_file()
    assert not (tmp_path / "pictures" / "confusion_matrix.png").exists()  # nothing tested yet


def test_the_confusion_matrix_names_the_classes():
    import torch

    names = ["T-shirt/top", "Trouser", "Ankle boot"]
    figure = pictures.confusion_matrix(torch.tensor([[5, 1, 0], [0, 6, 0], [2, 0, 4]]), names)
    (ax, _) = figure.axes  # the matrix and its colour bar
    assert [label.get_text() for label in ax.get_xticklabels()] == names
    assert [label.get_text() for label in ax.get_yticklabels()] == names
    assert ax.get_title() == "test accuracy 0.8333"
