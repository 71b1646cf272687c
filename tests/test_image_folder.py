"""Your own images (data=image_folder): real MNIST digits saved as PNG files, and colour
pictures of another size, through loading, training, eval, predict and export."""

import json
import math
import random

import pytest
import torch
from conftest import DATA_DIR, compose, need_data, read_metrics, run_cli
from PIL import Image, ImageDraw

import litlab
from litlab.data import ImageFolderDataModule, MNISTDataModule
from litlab.errors import LitlabError
from litlab.inference.export import export
from litlab.inference.predict import Predictor

PER_CLASS = 30


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The first 30 MNIST training digits of each class, one PNG each, in `<digit>/`."""
    need_data("MNIST")
    images, labels = MNISTDataModule(seed=0, data_dir=str(DATA_DIR)).load_split("train")
    root = tmp_path_factory.mktemp("digits")
    for digit in range(10):
        (root / str(digit)).mkdir()
        for i in (labels == digit).nonzero()[:PER_CLASS, 0].tolist():
            Image.fromarray(images[i, 0].numpy()).save(root / str(digit) / f"{i}.png")
    return root


def draw_shape(shape: str, rng: random.Random, size=(48, 40)) -> Image.Image:
    """A shape of a random colour, size and place on a paper of another random colour."""
    paper = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", size, paper)
    r = rng.randint(8, 13)
    x, y = rng.randint(r, size[0] - r), rng.randint(r, size[1] - r)
    ink = tuple((c + 128 + rng.randrange(-40, 40)) % 256 for c in paper)
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    elif shape == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=ink)
    else:
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=ink)
    return image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Colour pictures, 48 x 40, of three shapes; PNG and JPEG files mixed."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("shapes")
    for shape in ("circle", "square", "triangle"):
        (root / shape).mkdir()
        for i in range(PER_CLASS):
            draw_shape(shape, rng).save(root / shape / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "circle" / "notes.txt").write_text("not a picture, skipped")
    return root


def test_digit_pngs_are_held_as_the_mnist_digits_they_were(digits):
    dm = ImageFolderDataModule(root=str(digits), num_classes=10, image_size=28, seed=1)
    dm.setup()
    assert dm.class_names == [str(d) for d in range(10)]
    sizes = {split: torch.bincount(d.labels).tolist() for split, d in dm.splits.items()}
    assert sizes == {"train": [24] * 10, "val": [3] * 10, "test": [3] * 10}  # stratified
    train = dm.splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    images, labels = MNISTDataModule(seed=0, data_dir=str(DATA_DIR)).load_split("train")
    saved = [(labels == d).nonzero()[:PER_CLASS, 0] for d in range(10)]
    expected = {(bytes(images[i].numpy()), d) for d, index in enumerate(saved) for i in index}
    held = {
        (bytes(x.numpy()), int(y))
        for d in dm.splits.values()
        for x, y in zip(d.images, d.labels, strict=True)
    }
    assert held == expected  # every digit, exactly, under its own folder's label
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    whole = train.__getitems__(range(len(train)))[0]  # normalized by stats of the train split
    assert abs(whole.mean().item()) < 1e-4 and abs(whole.std().item() - 1) < 1e-3
    mean, std = dm.normalization()
    assert mean[0] == pytest.approx(0.1307, abs=0.02) and std[0] == pytest.approx(0.3081, abs=0.02)

    again = ImageFolderDataModule(root=str(digits), num_classes=10, image_size=28, seed=1)
    again.setup()
    assert torch.equal(again.splits["val"].images, dm.splits["val"].images)
    other = ImageFolderDataModule(root=str(digits), num_classes=10, image_size=28, seed=2)
    other.setup()
    assert not torch.equal(other.splits["val"].images, dm.splits["val"].images)


def test_colour_pictures_are_resized_and_their_fitted_parts_saved(shapes, tmp_path):
    dm = ImageFolderDataModule(
        seed=0, root=str(shapes), num_classes=3, channels=3, image_size=32, save_dir=str(tmp_path)
    )
    dm.setup()
    assert dm.splits["train"].images.shape[1:] == (3, 32, 32)
    assert sum(len(d) for d in dm.splits.values()) == 3 * PER_CLASS  # notes.txt is no picture
    saved = json.loads((tmp_path / "image_folder.json").read_text())
    assert saved["class_names"] == ["circle", "square", "triangle"]
    assert len(saved["mean"]) == len(saved["std"]) == 3
    picture = draw_shape("circle", random.Random(5))
    drawn = dm.draw(picture)
    assert drawn.shape == (3, 32, 32) and drawn.dtype == torch.uint8
    assert torch.equal(drawn[:, 0, 0], torch.tensor(picture.getpixel((0, 0)), dtype=torch.uint8))

    restored = ImageFolderDataModule(
        seed=0, root="nowhere", num_classes=3, channels=3, save_dir=str(tmp_path)
    )
    restored.restore()  # what predict and export do: the run's parts, not its pictures
    assert restored.class_names == saved["class_names"]
    assert torch.equal(restored.input_batch([drawn]), dm.input_batch([drawn]))


def test_config_shapes_flow_from_the_data_config(shapes, tmp_path):
    for model in ("cnn", "seed_cnn", "mlp", "vae_conv", "vae_mlp"):
        cfg = compose(
            tmp_path,
            "data=image_folder",
            f"data.root={shapes}",
            "data.num_classes=3",
            "data.channels=3",
            "data.image_size=24",
            f"model={model}",
        )
        parts = [cfg.model.get("net"), cfg.model.get("encoder"), cfg.model.get("decoder")]
        shapes_seen = {
            tuple(part.get("input_shape") or part.get("output_shape")) for part in parts if part
        }
        assert shapes_seen == {(3, 24, 24)}, model
        if "net" in cfg.model:
            assert cfg.model.net.num_classes == cfg.model.num_classes == 3


def on_images(root, classes, channels, size, prefix="data"):
    """The overrides that train on an image folder (`prefix`: where its data config is)."""
    return [
        f"{prefix}.root={root}",
        f"{prefix}.num_classes={classes}",
        f"{prefix}.channels={channels}",
        f"{prefix}.image_size={size}",
    ]


def train(tmp_path, folder, root, *overrides):
    return litlab.train(
        compose(
            tmp_path,
            "data=image_folder",
            *on_images(root, *FOLDERS[folder]),
            "trainer.max_epochs=1",
            "callbacks.rich_progress_bar=null",
            *overrides,
        )
    )


FOLDERS = {"digits": (10, 1, 28), "shapes": (3, 3, 32)}  # classes, channels, image size


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_a_cnn_trains_and_its_run_evaluates_predicts_and_exports(folder, request, tmp_path):
    pytest.importorskip("onnxruntime", reason="pip install 'litlab[export]'")
    root = request.getfixturevalue(folder)
    classes, channels, size = FOLDERS[folder]
    run_dir = tmp_path / "run"
    metrics = train(run_dir, folder, root, "model=cnn")
    assert metrics["test/loss"] < 2 * math.log(classes)  # not diverged: about log(classes)

    again = litlab.evaluate(
        litlab.compose("eval", [f"run_dir={run_dir}", f"paths.output_dir={tmp_path / 'eval'}"])
    )
    assert again["test/acc"] == pytest.approx(metrics["test/acc"])
    with pytest.raises(LitlabError, match="is not read from a data_dir"):
        litlab.evaluate(litlab.compose("eval", [f"run_dir={run_dir}", f"data_dir={tmp_path}"]))

    inputs = [next((root / name).iterdir()) for name in sorted(p.name for p in root.iterdir())]
    result = run_cli(
        "litlab-predict",
        f"run_dir={run_dir}",
        f"inputs=[{','.join(map(str, inputs))}]",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = list(map(json.loads, result.stdout.splitlines()))
    names = sorted(p.name for p in root.iterdir())
    assert [r["input"] for r in records] == list(map(str, inputs))
    assert all(list(r["probabilities"]) == names for r in records)
    assert all(r["predicted_class"] == names[r["predicted_index"]] for r in records)

    result = run_cli(
        "litlab-export", f"run_dir={run_dir}", "format=onnx", f"hydra.run.dir={tmp_path / 'x'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((run_dir / "export" / "onnx" / "metadata.json").read_text())
    assert meta["inputs"][0]["shape"] == ["batch", channels, size, size]
    assert meta["class_names"] == names
    fitted = json.loads((run_dir / "image_folder.json").read_text())
    assert meta["normalization"]["mean"] == fitted["mean"] and len(fitted["mean"]) == channels


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_a_vae_trains(folder, request, tmp_path):
    metrics = train(tmp_path, folder, request.getfixturevalue(folder), "experiment=vae_conv")
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    config = (tmp_path / "config.yaml").read_text()
    assert "mean: 0.0" in config  # BCE's pixels in [0, 1], as the experiment sets


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_a_vae_pretrained_cnn_trains_predicts_and_exports(folder, request, tmp_path):
    root = request.getfixturevalue(folder)
    classes, channels, size = FOLDERS[folder]
    metrics = train(
        tmp_path,
        folder,
        root,
        "experiment=vae_pretrain_cnn",
        "data@pretrain.data=image_folder",
        *on_images(root, *FOLDERS[folder], prefix="pretrain.data"),
        f"data.labelled={10 * classes}",
        "pretrain.max_epochs=1",
    )
    assert {"test/acc", "scratch/test/acc"} <= set(metrics)
    assert read_metrics(tmp_path / "pretrain")["test/loss"] > 0
    names = sorted(p.name for p in root.iterdir())
    pictures = sorted((root / names[1]).glob("*.png"))[:3]
    records = Predictor(tmp_path).files(pictures)
    assert [r["input"] for r in records] == list(map(str, pictures))
    assert all(list(r["probabilities"]) == names for r in records)
    path = export(tmp_path, "torchscript")
    trained = litlab.load_run(tmp_path).model.net
    x = torch.randn(4, channels, size, size)
    torch.testing.assert_close(torch.jit.load(str(path))(x), trained(x), atol=1e-4, rtol=0)


def make_folder(root, classes: dict[str, list[tuple[int, int]]]):
    """`root/<class>/<i>.png`: grey pictures of the given (width, height) sizes."""
    for name, sizes in classes.items():
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("L", size, 40 * i).save(root / name / f"{i}.png")
    return root


def setup(root, num_classes=2, **kwargs):
    ImageFolderDataModule(seed=0, root=str(root), num_classes=num_classes, **kwargs).setup()


def test_a_missing_folder(tmp_path):
    with pytest.raises(LitlabError, match=f"data.root={tmp_path / 'nope'} is not a folder"):
        setup(tmp_path / "nope")


def test_an_empty_class_folder(tmp_path):
    make_folder(tmp_path, {"a": [(8, 8)] * 10, "b": [(8, 8)] * 10})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("no pictures here")
    with pytest.raises(LitlabError, match=f"class folder {tmp_path / 'c'} holds no pictures"):
        setup(tmp_path, num_classes=3)


def test_a_single_class(tmp_path):
    make_folder(tmp_path, {"only": [(8, 8)] * 10})
    with pytest.raises(LitlabError, match=r"has 1 class folder \(only\); a classifier needs"):
        setup(tmp_path, num_classes=1)


def test_the_wrong_number_of_classes(tmp_path):
    make_folder(tmp_path, {"a": [(8, 8)] * 10, "b": [(8, 8)] * 10})
    with pytest.raises(LitlabError, match="set data.num_classes=2"):
        setup(tmp_path, num_classes=10)


def test_an_unreadable_image_is_named_with_its_path(tmp_path):
    make_folder(tmp_path, {"a": [(8, 8)] * 10, "b": [(8, 8)] * 10})
    broken = tmp_path / "b" / "3.png"
    broken.write_bytes(broken.read_bytes()[:30])  # truncated
    with pytest.raises(LitlabError, match=f"{broken} is not a readable image"):
        setup(tmp_path)


def test_mixed_sizes_without_resizing(tmp_path):
    make_folder(tmp_path, {"a": [(8, 8)] * 10, "b": [(8, 8)] * 9 + [(12, 10)]})
    with pytest.raises(
        LitlabError, match=r"different sizes \(height x width\): .* is 10 x 12; set data.image_size"
    ):
        setup(tmp_path, image_size=None, input_shape=[1, 8, 8])
    setup(tmp_path, image_size=8)  # resized, they are one size


def test_own_size_must_be_given_and_match_the_input_shape(tmp_path):
    make_folder(tmp_path, {"a": [(8, 6)] * 10, "b": [(8, 6)] * 10})
    with pytest.raises(LitlabError, match=r"image_size=null keeps .* give it as data.input_shape"):
        setup(tmp_path, image_size=None)  # before any model is built from the shape
    with pytest.raises(LitlabError, match=r"set data.input_shape=\[1, 6, 8\]"):
        setup(tmp_path, image_size=None, input_shape=[1, 8, 8])
    setup(tmp_path, image_size=None, input_shape=[1, 6, 8])


def test_a_bad_folder_is_one_line_through_the_cli(tmp_path):
    make_folder(tmp_path / "pics", {"only": [(8, 8)] * 10})
    result = run_cli(
        "litlab-train",
        "data=image_folder",
        f"data.root={tmp_path / 'pics'}",
        "data.num_classes=1",
        "model=cnn",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "a classifier needs one sub-folder of pictures per class" in errors[0]


def test_a_run_reads_only_the_classes_it_was_trained_on(tmp_path):
    make_folder(tmp_path / "pics", {"a": [(8, 8)] * 10, "b": [(8, 8)] * 10})
    (tmp_path / "image_folder.json").write_text(
        json.dumps({"class_names": ["a", "c"], "mean": [0.5], "std": [0.2]})
    )
    with pytest.raises(LitlabError, match=r"has the classes \['a', 'b'\], but the run was"):
        setup(tmp_path / "pics", save_dir=str(tmp_path))


def test_predict_and_export_need_the_runs_fitted_parts_and_the_contract(tmp_path):
    from omegaconf import OmegaConf

    from litlab.data.base import trained_data

    config = OmegaConf.create(
        {"_target_": "litlab.data.ImageFolderDataModule", "root": "x", "num_classes": 2, "seed": 0}
    )
    config.save_dir = str(tmp_path)
    with pytest.raises(LitlabError, match="no image_folder.json in"):
        trained_data(config)
    plain = OmegaConf.create({"_target_": "lightning.pytorch.LightningDataModule"})
    with pytest.raises(LitlabError, match="subclass litlab.data.base.Modality"):
        trained_data(plain)
