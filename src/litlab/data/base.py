"""What every litlab DataModule shares: split loaders, seeded splits, and the modality contract
that eval, predict and export ask of a trained run's data instead of knowing each dataset."""

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from litlab.errors import LitlabError

# (input name, content for `input_batch`, or None and why it could not be read)
InputItem = tuple[str, object, str | None]


def whole_batch(batch):
    """Collate for datasets whose `__getitems__` already returns a whole batch."""
    return batch


class Modality:
    """How a dataset's inputs reach a trained net outside training: read from a file and
    normalized, named by class, and fed to an exported net.

    A trained run asks `for_run` to point its data config at what training fitted and saved in
    the run (a vocabulary, class names, a normalization), then `restore` loads those parts
    without reading the dataset itself.
    """

    class_names: Sequence[str]

    @classmethod
    def for_run(cls, config: DictConfig, run_dir: Path) -> DictConfig:
        """The run's data config, reading the parts fitted in training from `run_dir`."""
        return config

    def restore(self) -> None:
        """Load the parts fitted in training (after `for_run`), not the dataset."""

    def read_inputs(self, path: Path) -> list[InputItem]:
        """Each input the file holds, as `input_batch` takes it, or the reason it is unreadable."""
        raise NotImplementedError

    def input_batch(self, contents: Sequence) -> object:
        """The net's input for `contents` (what `read_inputs` gave), as in a training batch."""
        raise NotImplementedError

    def export_signature(self) -> dict:
        """An exported net's inputs: `example` tensors to trace, `check` tensors of other sizes,
        their `dynamic` dimensions, and the `inputs` described (name, dtype, shape)."""
        raise NotImplementedError

    def export_metadata(self) -> dict:
        """What a runtime must know to prepare an input and read the answer (class names, ...)."""
        return {"class_names": list(self.class_names)}

    def export_files(self) -> list[Path]:
        """Files of the run an export ships beside the net (a tokenizer)."""
        return []


def run_data_config(config: DictConfig, run_dir: Path) -> DictConfig:
    """A trained run's data config, reading what it fitted from `run_dir` wherever it now lives."""
    for_run = getattr(get_class(config._target_), "for_run", None)
    return for_run(config, Path(run_dir)) if for_run else config


def trained_data(config: DictConfig) -> Modality:
    """The DataModule of a trained run's data config (see `run_data_config`), restored."""
    data = instantiate(config)
    if not isinstance(data, Modality):
        raise LitlabError(
            f"{config._target_} does not say how its inputs are read and fed to the net: "
            "subclass litlab.data.base.Modality to predict with or export its runs"
        )
    data.restore()
    return data


class SplitDataModule(L.LightningDataModule):
    """Loaders over `self.splits` ("train", "val", "test"): `batch_size` for training,
    `eval_batch_size` for evaluation; subclasses say how a split becomes a loader."""

    def loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """The shares of the data split off for validation and test must leave some to train on."""
    if val_fraction + test_fraction >= 1:
        raise LitlabError("data.val_fraction + data.test_fraction must leave data to train on")


def stratified_split(labels: Sequence, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices per part (e.g. val, test, then the rest for train), every class split alike."""
    rng = random.Random(seed)
    by_label: dict = defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        start = 0
        for part, fraction in zip(parts, fractions, strict=False):
            size = round(fraction * len(members))
            part.extend(members[start : start + size])
            start += size
        parts[-1].extend(members[start:])
    return [sorted(p) for p in parts]


def balanced_subset(
    order: torch.Tensor, labels: torch.Tensor, n: int, classes: int
) -> torch.Tensor:
    """The first n / classes indices of each class in `order` (for `data.labelled=n`)."""
    per_class = n // classes
    available = int(torch.bincount(labels[order], minlength=classes).min())
    if n % classes or not 1 <= per_class <= available:
        raise LitlabError(
            f"data.labelled={n} must be a multiple of {classes} between {classes} and "
            f"{classes * available} (the rarest class has {available} training images)"
        )
    picked = [order[labels[order] == c][:per_class] for c in range(classes)]
    return torch.cat(picked).sort().values
