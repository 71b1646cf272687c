"""Each logger's own files, from one short real run with all four: the final metrics, the
hyperparameters and the resolved config reach every one of them."""

import csv
import struct

import pytest
import yaml
from conftest import DATA_DIR, compose, need_data, read_metrics

import litlab

pytest.importorskip("mlflow", reason="pip install 'litlab[track]'")
pytest.importorskip("wandb", reason="pip install 'litlab[track]'")
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")  # in MLflow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    need_data("MNIST")
    run_dir = tmp_path_factory.mktemp("tracked")
    litlab.train(
        compose(
            run_dir,
            "experiment=mlp_relu",
            "debug=limit",
            "trainer.max_epochs=2",
            "logger=[csv,tensorboard,mlflow,wandb]",
            "callbacks.rich_progress_bar=null",
        )
    )
    return run_dir


@pytest.fixture(scope="module")
def final(run_dir):
    metrics = read_metrics(run_dir)
    assert {"test/acc", "test/loss", "val/acc", "train/loss"} <= set(metrics)
    return metrics


def test_csv(run_dir, final):
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    for key in ("test/acc", "val/acc", "train/loss"):
        last = [float(row[key]) for row in rows if row.get(key)][-1]
        assert last == pytest.approx(final[key])
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["model"]["net"]["activation"] == "relu"  # the resolved config
    assert hparams["data"]["data_dir"] == str(DATA_DIR)
    assert hparams["net"]["_target_"] == "litlab.nets.MLP"  # the model's own hyperparameters


def test_tensorboard(run_dir, final):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for key in ("test/acc", "val/acc", "train/loss"):
        assert events.Scalars(key)[-1].value == pytest.approx(final[key])
    assert {"learning_curves", "confusion_matrix"} <= set(events.Tags()["images"])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model/net/activation"].string_value == "relu"
    assert hparams["trainer/max_epochs"].number_value == 2


def test_mlflow(run_dir, final):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("litlab").experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("test/acc", "val/acc", "train/loss"):
        assert run.data.metrics[key] == pytest.approx(final[key])
    assert run.data.params["model/net/activation"] == "relu"
    assert run.data.params["trainer/max_epochs"] == "2"
    assert run.data.tags["run_dir"] == str(run_dir)
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "pictures")}
    assert pictures == {"pictures/learning_curves.png", "pictures/confusion_matrix.png"}


def wandb_records(path):
    """The protobuf records of a .wandb file: a LevelDB-style log of 32 KiB blocks, each
    record in 7-byte-headed pieces (checksum, length, kind: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data.startswith(b":W&B")
    position, piece = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # too little left in the block for a header
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        piece += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            yield record
            piece = b""


def test_wandb_offline(run_dir, final):
    import json

    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    summary, config, kinds = {}, {}, set()
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        kinds.add(kind)
        if kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    assert "exit" in kinds  # the run was finished, its file complete
    for key in ("test/acc", "val/acc", "train/loss"):
        assert summary[key] == pytest.approx(final[key])
    assert config["model"]["net"]["activation"] == "relu"
    assert config["trainer"]["max_epochs"] == 2
    images = run_file.parent / "files" / "media" / "images"
    assert {p.name.split("_")[0] for p in images.glob("*.png")} == {"learning", "confusion"}


def test_a_vae_shows_its_pictures_in_every_tracker(tmp_path):
    need_data("MNIST")
    litlab.train(
        compose(
            tmp_path,
            "experiment=vae_mlp",
            "debug=limit",
            "trainer.max_epochs=1",
            "logger=[tensorboard,mlflow,wandb]",
            "callbacks.rich_progress_bar=null",
        )
    )
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"reconstructions", "samples", "latent_scatter"} <= set(events.Tags()["images"])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("litlab").experiment_id])
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "pictures")}
    assert {"pictures/reconstructions_epoch000.png", "pictures/latent_scatter.png"} <= pictures
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    images = run_file.parent / "files" / "media" / "images"
    assert {"reconstructions", "samples", "latent"} <= {
        p.name.split("_")[0] for p in images.glob("*.png")
    }
