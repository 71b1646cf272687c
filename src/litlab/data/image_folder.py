"""Your own images: one sub-folder of pictures per class, any size, grey or colour.

Every picture is decoded once, resized to `image_size` and held in memory as uint8, as MNIST
is; batches come from one vectorized index. The class names and the normalization are saved
in the run, so that eval, predict and export read a picture as training did.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from litlab.data.base import balanced_subset, check_fractions, stratified_split
from litlab.data.images import ImageDataModule, InMemoryImages, Stat, on_white, read_image
from litlab.errors import LitlabError, first_line
from litlab.files import atomic_write
from litlab.run.memory import check_room
from litlab.settings import Count, Positive, PositiveInt, Share

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FITTED_FILE = "image_folder.json"  # class names and normalization, in the run directory
MODES = {1: "L", 3: "RGB"}


def pixels(image: Image.Image, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """A picture as uint8 [channels, H, W], resized to `size` (H, W) unless None."""
    image = on_white(image).convert(MODES[channels])
    if size is not None and image.size != size[::-1]:
        image = image.resize(size[::-1], Image.Resampling.BILINEAR)  # antialiased when shrinking
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.reshape(*array.shape[:2], channels).transpose(2, 0, 1).copy())


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], as fractions of 255."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]


class ImageFolderDataModule(ImageDataModule):
    """`root/<class name>/<picture>` split into train/val/test, seeded and stratified by class."""

    def __init__(
        self,
        root: str,
        num_classes: PositiveInt,
        channels: Literal[1, 3] = 1,  # greyscale or colour
        image_size: PositiveInt | None = 32,  # null: the pictures' own size
        input_shape: Sequence[PositiveInt] | None = None,
        mean: float | Sequence[float] | None = None,  # one for all channels, or one each
        std: Positive | Sequence[Positive] | None = None,
        val_fraction: Share = 0.1,
        test_fraction: Share = 0.1,
        labelled: PositiveInt | None = None,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt = 256,
        save_dir: str | None = None,
        num_workers: Count = 0,
        *,
        seed: int,  # the run's `seed`: the data's split follows it, and has no default of its own
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if (mean is None) != (std is None):
            raise LitlabError("set both data.mean and data.std, or neither (computed on train)")
        check_fractions(val_fraction, test_fraction)
        if input_shape is None or None in input_shape:
            if image_size is None:
                raise LitlabError(
                    "data.image_size=null keeps the pictures' own size: give it as "
                    "data.input_shape=[channels, height, width] (the models read their shapes "
                    "from it), or set data.image_size to resize"
                )
            self.hparams.input_shape = [channels, image_size, image_size]
        self.root = Path(root).expanduser()
        self.splits: dict[str, InMemoryImages] = {}
        self.class_names: list[str] = []
        self.stats: tuple[Stat, Stat] = (mean, std)

    @classmethod
    def for_run(cls, config, run_dir: Path):
        config.save_dir = str(run_dir)
        return config

    def fitted_file(self) -> Path | None:
        return Path(self.hparams.save_dir) / FITTED_FILE if self.hparams.save_dir else None

    def restore(self) -> None:
        path = self.fitted_file()
        if path is None or not path.is_file():
            raise LitlabError(
                f"no {FITTED_FILE} in {self.hparams.save_dir}: the run's class names are "
                "missing; pass the directory of a finished image-folder run"
            )
        fitted = json.loads(path.read_text())
        self.class_names, self.stats = fitted["class_names"], (fitted["mean"], fitted["std"])

    def normalization(self) -> tuple[Stat, Stat]:
        return self.stats

    def preprocessing(self) -> str:
        _, height, width = self.hparams.input_shape
        colour = "greyscale" if self.hparams.channels == 1 else "RGB"
        return (
            f"{colour}, transparency as white, resized to {height} x {width} (bilinear) "
            "(litlab.inference.predict)"
        )

    def draw(self, image: Image.Image) -> torch.Tensor:
        return pixels(image, self.hparams.channels, tuple(self.hparams.input_shape[1:]))

    def scan(self) -> tuple[list[str], list[Path], torch.Tensor]:
        """The class names (sub-folder names, sorted), every picture's path and its label."""
        if not self.root.is_dir():
            raise LitlabError(
                f"data.root={self.root} is not a folder: point it at a folder with one "
                "sub-folder of pictures per class"
            )
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")
        paths, labels = [], []
        for label, folder in enumerate(folders):
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
            if not found:
                raise LitlabError(
                    f"class folder {folder} holds no pictures ({', '.join(sorted(SUFFIXES))}); "
                    "add some or remove the folder"
                )
            paths += found
            labels += [label] * len(found)
        names = [folder.name for folder in folders]
        if len(names) < 2:
            raise LitlabError(
                f"{self.root} has {len(names)} class folder{'s' * (len(names) != 1)} "
                f"({', '.join(names) or 'none'}); a classifier needs one sub-folder of pictures "
                "per class, at least two"
            )
        if len(names) != self.hparams.num_classes:
            raise LitlabError(
                f"{self.root} has {len(names)} class folders but data.num_classes="
                f"{self.hparams.num_classes}; set data.num_classes={len(names)}"
            )
        return names, paths, torch.tensor(labels, dtype=torch.int64)

    def load(self, paths: list[Path]) -> torch.Tensor:
        """Every picture as uint8 [N, C, H, W], decoded once."""
        hp = self.hparams
        size = (hp.image_size, hp.image_size) if hp.image_size else None
        images = None
        for i, path in enumerate(paths):
            try:
                x = pixels(read_image(path), hp.channels, size)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise LitlabError(
                    f"{path} is not a readable image ({first_line(err)}); replace or remove it"
                ) from err
            if images is None:  # all of them at once: refused where they do not fit
                shape = " x ".join(map(str, x.shape))
                check_room(
                    len(paths) * x.numel(),
                    f"the {len(paths)} pictures of {self.root}, decoded ({shape} bytes each),",
                    "set a smaller data.image_size, or train on fewer pictures",
                )
                images = torch.empty(len(paths), *x.shape, dtype=torch.uint8)
            elif x.shape != images.shape[1:]:
                raise LitlabError(
                    f"pictures of different sizes (height x width): {paths[0]} is "
                    f"{images.shape[2]} x {images.shape[3]}, {path} is {x.shape[1]} x "
                    f"{x.shape[2]}; set data.image_size to resize them all"
                )
            images[i] = x
        if tuple(images.shape[1:]) != tuple(hp.input_shape):
            shape = list(images.shape[1:])
            raise LitlabError(
                f"the pictures are {shape} (channels, height, width) but data.input_shape="
                f"{list(hp.input_shape)}; set data.input_shape={shape}, or data.image_size to "
                "resize"
            )
        return images

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        names, paths, labels = self.scan()
        fitted = self.fitted_file()
        if fitted is not None and fitted.is_file():  # a trained run's own classes and stats
            self.restore()
            if names != self.class_names:
                raise LitlabError(
                    f"{self.root} has the classes {names}, but the run was trained on "
                    f"{self.class_names}; point data.root at the run's pictures"
                )
        self.class_names = names
        images = self.load(paths)
        fractions = [hp.val_fraction, hp.test_fraction]
        parts = stratified_split(labels.tolist(), fractions, hp.seed)
        val, test, train = (torch.tensor(part, dtype=torch.int64) for part in parts)
        for split, part in (("train", train), ("val", val), ("test", test)):
            if not len(part):
                fix = (
                    "lower data.val_fraction and data.test_fraction"
                    if split == "train"
                    else f"add pictures or raise data.{split}_fraction"
                )
                raise LitlabError(f"the {split} split of {self.root} is empty: {fix}")
        if hp.labelled:
            train = balanced_subset(train, labels, hp.labelled, hp.num_classes)
        if self.stats[0] is None:
            self.stats = channel_stats(images[train])
        if fitted is not None:
            mean, std = self.stats
            record = {"class_names": names, "mean": mean, "std": std}
            atomic_write(fitted, json.dumps(record, indent=2) + "\n")  # DDP ranks may race
        self.splits = {
            split: InMemoryImages(images[part], labels[part], *self.stats)
            for split, part in (("train", train), ("val", val), ("test", test))
        }
