"""The MNIST family (MNIST, Fashion-MNIST) held in memory as uint8 tensors.

A new picture is drawn the way the dataset draws one (MNIST: grayscale, a light digit on
black, scaled into 20 x 20 and centred by its centre of mass in 28 x 28).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from litlab.data.base import balanced_subset
from litlab.data.fetch import (
    IDX_FILES,
    fetch_fashion_mnist,
    fetch_mnist,
    has_idx_files,
    locate,
    not_found,
    raw_dir,
)
from litlab.data.idx import read_idx
from litlab.data.images import ImageDataModule, InMemoryImages, on_white
from litlab.errors import LitlabError
from litlab.settings import Count, MNISTFamily, Positive, PositiveInt, Shape


@dataclass(frozen=True)
class ImageDataset:
    folder: str  # torchvision's folder name under data_dir
    classes: tuple[str, ...]
    fetch: Callable[[Path], Path]  # embedded offline fetcher
    fetch_command: str
    # The side of the square each object was scaled into, centred in the image (MNIST: 20 of 28)
    object_size: int = 28


DATASETS: dict[MNISTFamily, ImageDataset] = {
    "mnist": ImageDataset(
        "MNIST", tuple("0123456789"), fetch_mnist, "litlab-data mnist", object_size=20
    ),
    "fashion_mnist": ImageDataset(
        "FashionMNIST",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        fetch_fashion_mnist,
        "litlab-data fashion_mnist",
    ),
}


INK = 32  # of 255: brighter than this above the background counts as part of the object


def background(gray: torch.Tensor) -> float:
    """The grey level of a picture's edge."""
    return torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).median().item()


def mnist_like(image: Image.Image, size: int = 28, object_size: int = 20) -> torch.Tensor:
    """A picture of any size and colours as the MNIST family draws one: uint8 [1, size, size],
    a light object on black, scaled to fit `object_size` and centred by its centre of mass.

    Dark-on-light pictures (ink on paper) are inverted; transparency counts as white paper.
    """
    image = on_white(image)
    gray = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32).copy())
    if background(gray) > 127:  # a light background: make the object the light part
        gray = 255 - gray
    ink = (gray - background(gray)).clamp(min=0)
    if ink.max() < INK:
        raise ValueError("no object found: the picture is blank or has almost no contrast")
    ink *= 255 / ink.max()  # strokes at full brightness, as in MNIST
    rows, cols = (ink > INK).any(dim=1).nonzero(), (ink > INK).any(dim=0).nonzero()
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = object_size / max(crop.shape)
    width, height = (max(1, round(n * scale)) for n in (crop.shape[1], crop.shape[0]))
    small = Image.fromarray(crop.round().byte().numpy()).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    obj = torch.from_numpy(np.asarray(small, dtype=np.float32).copy())
    mass = obj.sum().clamp(min=1e-6)
    centre_y = (obj.sum(dim=1) * torch.arange(height)).sum() / mass
    centre_x = (obj.sum(dim=0) * torch.arange(width)).sum() / mass
    middle = size / 2  # where MNIST puts the centre of mass (pixel 14 of 0..27)
    top = min(max(round(middle - centre_y.item()), 0), size - height)
    left = min(max(round(middle - centre_x.item()), 0), size - width)
    out = torch.zeros(1, size, size, dtype=torch.uint8)
    out[0, top : top + height, left : left + width] = obj.round().byte()
    return out


class MNISTDataModule(ImageDataModule):
    """MNIST or Fashion-MNIST from `<data_dir>/<Folder>/raw` IDX files, seeded train/val split."""

    def __init__(
        self,
        name: MNISTFamily = "mnist",
        data_dir: str = "data",
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt = 1000,
        val_size: PositiveInt = 5000,
        labelled: PositiveInt | None = None,
        download: bool = False,
        mean: float = 0.1307,
        std: Positive = 0.3081,
        num_classes: PositiveInt = 10,
        input_shape: Shape = (1, 28, 28),
        num_workers: Count = 0,
        *,
        seed: int,  # the run's `seed`: the data's split follows it, and has no default of its own
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.spec = DATASETS[name]
        self.raw_dir, self.looked = locate(
            data_dir, lambda d: raw_dir(d, self.spec.folder), has_idx_files
        )
        self.splits: dict[str, InMemoryImages] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.classes

    def prepare_data(self) -> None:
        if has_idx_files(self.raw_dir):
            return
        if not self.hparams.download:
            hp = self.hparams
            missing = not_found(self.spec.folder, hp.data_dir, self.looked, self.spec.fetch_command)
            raise LitlabError(f"{missing}; or set data.download=true (online)")
        import torchvision.datasets as tvd

        torchvision_class = getattr(tvd, self.spec.folder)
        try:
            for train in (True, False):
                torchvision_class(root=str(self.raw_dir.parents[1]), train=train, download=True)
        except Exception as err:  # torchvision raises bare RuntimeError/URLError offline
            raise LitlabError(
                f"torchvision could not download {self.spec.folder} ({err}); "
                f"offline, run `{self.spec.fetch_command}` instead"
            ) from err

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 1, H, W] uint8 and labels int64 of the official `train` or `test` split."""
        image_file, label_file = IDX_FILES[split]
        images, labels = read_idx(self.raw_dir / image_file), read_idx(self.raw_dir / label_file)
        images = images.unsqueeze(1) if images.dim() == 3 else images
        if len(images) != len(labels):
            raise LitlabError(
                f"{self.raw_dir}: {len(images)} images but {len(labels)} labels in the {split} "
                "split; delete the folder and fetch the data again"
            )
        if tuple(images.shape[1:]) != tuple(self.hparams.input_shape):
            raise LitlabError(
                f"{self.raw_dir} holds images of shape {tuple(images.shape[1:])}, but "
                f"data.input_shape is {list(self.hparams.input_shape)}"
            )
        if int(labels.max()) >= self.hparams.num_classes:
            raise LitlabError(
                f"{self.raw_dir} has label {int(labels.max())}, but data.num_classes is "
                f"{self.hparams.num_classes}"
            )
        return images, labels.long()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        images, labels = self.load_split("train")
        if not 0 < hp.val_size < len(labels):
            raise LitlabError(f"data.val_size must be between 1 and {len(labels) - 1}")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(hp.seed))
        val, train = order[: hp.val_size], order[hp.val_size :]
        if hp.labelled:
            train = balanced_subset(train, labels, hp.labelled, hp.num_classes)
        test_images, test_labels = self.load_split("test")
        self.splits = {
            "train": InMemoryImages(images[train], labels[train], hp.mean, hp.std),
            "val": InMemoryImages(images[val], labels[val], hp.mean, hp.std),
            "test": InMemoryImages(test_images, test_labels, hp.mean, hp.std),
        }

    def draw(self, image: Image.Image) -> torch.Tensor:
        return mnist_like(image, self.hparams.input_shape[-1], self.spec.object_size)

    def preprocessing(self) -> str:
        return (
            f"grayscale, a light object on black, scaled to fit {self.spec.object_size} pixels "
            f"and centred by its centre of mass in {self.hparams.input_shape[-1]} "
            "(litlab.inference.predict)"
        )
