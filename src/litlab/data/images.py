"""Image datasets held in memory as uint8 tensors, and how their inputs are read and fed.

A batch is built with one vectorized index and one fused normalization (`__getitems__`), not
per-sample PIL + ToTensor. The loaders are plain `DataLoader`s over an index sampler, so
Lightning's distributed sampler still gives each DDP rank its own shard.
"""

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.export import Dim
from torch.utils.data import DataLoader, Dataset

from litlab.data.base import InputItem, Modality, SplitDataModule, whole_batch
from litlab.errors import first_line

Stat = float | Sequence[float]  # one value for all channels, or one per channel


class InMemoryImages(Dataset):
    """uint8 images [N, C, H, W] and int64 labels; hands out normalized float batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Stat, std: Stat):
        self.images, self.labels = images, labels
        # (x / 255 - mean) / std as one multiply and one subtract, per channel
        std = torch.as_tensor(std, dtype=torch.float64).reshape(-1, 1, 1)
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1, 1, 1)
        self.scale, self.shift = (1.0 / (255.0 * std)).float(), (mean / std).float()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes

    def to(self, device: torch.device) -> "InMemoryImages":
        """These images on `device`: batches are then cut there, with no copy from the host."""
        moved = copy.copy(self)
        for name in ("images", "labels", "scale", "shift"):
            setattr(moved, name, getattr(self, name).to(device))
        return moved

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.images.device)
        x = self.images[index].to(torch.float32).mul_(self.scale).sub_(self.shift)
        return x, self.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def read_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated or corrupt file fails here
        return image.copy()


def on_white(image: Image.Image) -> Image.Image:
    """The picture upright (EXIF), its transparent parts as white paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image


class ImageModality(Modality):
    """Images in, as `draw` makes a picture into the dataset's uint8 [C, H, W], normalized by
    `normalization()` (mean, std) as in training. Subclasses have `hparams.input_shape`."""

    def draw(self, image: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def normalization(self) -> tuple[Stat, Stat]:
        return self.hparams.mean, self.hparams.std

    def preprocessing(self) -> str:
        """How a picture is drawn for the net, in words, for an export's metadata."""
        raise NotImplementedError

    def read_inputs(self, path: Path) -> list[InputItem]:
        try:
            return [(str(path), self.draw(read_image(path)), None)]
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            return [(str(path), None, f"not a readable image ({first_line(err)})")]
        except ValueError as err:  # read, but nothing to classify in it
            return [(str(path), None, str(err))]

    def input_batch(self, contents: Sequence[Image.Image | torch.Tensor]) -> torch.Tensor:
        """Normalized float images [N, C, H, W] of pictures (or of what `draw` made of them)."""
        pixels = [x if isinstance(x, torch.Tensor) else self.draw(x) for x in contents]
        shape = tuple(self.hparams.input_shape)
        images = torch.stack(pixels) if pixels else torch.empty(0, *shape, dtype=torch.uint8)
        labels = torch.zeros(len(pixels), dtype=torch.int64)
        return InMemoryImages(images, labels, *self.normalization()).__getitems__(
            range(len(pixels))
        )[0]

    def export_signature(self) -> dict:
        shape = list(self.hparams.input_shape)
        generator = torch.Generator().manual_seed(0)
        return {
            "example": (torch.randn(2, *shape, generator=generator),),
            "check": (torch.randn(5, *shape, generator=generator),),
            "dynamic": ({0: Dim("batch")},),
            "inputs": [{"name": "images", "dtype": "float32", "shape": ["batch", *shape]}],
        }

    def export_metadata(self) -> dict:
        mean, std = self.normalization()
        return {
            **super().export_metadata(),
            "normalization": {"mean": mean, "std": std, "x": "(pixel/255 - mean)/std"},
            "preprocessing": self.preprocessing(),
        }


class ImageDataModule(ImageModality, SplitDataModule):
    """Images held as `InMemoryImages` per split in `self.splits`; on a GPU, a split that fits
    (in a quarter of its free memory) is kept there whole when no worker processes read it."""

    def on_training_device(self, split: str) -> InMemoryImages:
        images = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is None or device.type != "cuda" or self.hparams.num_workers > 0:
            return images
        free, _ = torch.cuda.mem_get_info(device)
        if images.images.device != device and images.nbytes < free / 4:
            images = self.splits[split] = images.to(device)
        return images

    def loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.on_training_device(split),
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=whole_batch,
            num_workers=self.hparams.num_workers,
        )
