"""Fractional batch limits (`trainer.limit_val_batches=0.1`) checked against the data before a
run starts: Lightning rounds a fraction of a split's batches down, per process, and stops with a
traceback when that leaves none; here that is one line naming what would work."""

import math
from decimal import ROUND_CEILING, Decimal

import lightning.pytorch as L
from torch.utils.data import DataLoader

from litlab.errors import LitlabError

# Each limit, the split it cuts and the datamodule's loader of that split.
LIMITS = {
    "limit_train_batches": ("training", "train_dataloader"),
    "limit_val_batches": ("validation", "val_dataloader"),
    "limit_test_batches": ("test", "test_dataloader"),
}


def batches_per_process(loader: DataLoader, processes: int) -> int:
    """The batches one of `processes` data-parallel processes draws from `loader`: each takes
    every `processes`-th sample (a batch, for a loader that batches by itself), rounded up."""
    if loader.batch_size is None:  # a batch sampler: whole batches are shared out
        return math.ceil(len(loader) / processes)
    samples = math.ceil(len(loader.dataset) / processes)
    rounding = math.floor if loader.drop_last else math.ceil
    return rounding(samples / loader.batch_size)


def smallest_fraction(batches: int) -> str:
    """1 / `batches` rounded up to two significant digits, or more where float rounding needs
    them: a fraction that leaves one batch (Lightning takes int(batches * fraction))."""
    first = -math.floor(math.log10(1 / batches))  # the place of its first significant digit
    for digits in range(first + 1, first + 12):
        fraction = (Decimal(1) / batches).quantize(Decimal(10) ** -digits, rounding=ROUND_CEILING)
        if int(batches * float(fraction)) >= 1:
            return f"{fraction.normalize():f}"
    return repr(1 / batches)


def check_limits(
    trainer: L.Trainer, datamodule: L.LightningDataModule, fitting: bool, testing: bool
) -> None:
    """Refuse a fraction in (0, 1) of a split that leaves no batch on a process, naming the
    batches the split has and the smallest fraction that keeps one."""
    if trainer.fast_dev_run or trainer.overfit_batches:  # these set the batches themselves
        return
    used = {"limit_train_batches": fitting, "limit_val_batches": fitting}
    used["limit_test_batches"] = testing
    processes = trainer.world_size
    for key, (split, loader_name) in LIMITS.items():
        limit = getattr(trainer, key)
        if not used[key] or not isinstance(limit, float) or not 0 < limit < 1:
            continue
        datamodule.setup("fit" if fitting else "test")
        batches = batches_per_process(getattr(datamodule, loader_name)(), processes)
        if batches == 0 or int(batches * limit) >= 1:
            continue
        per = f"per process ({processes} processes)" if processes > 1 else "in all"
        raise LitlabError(
            f"trainer.{key}={limit} leaves no batch: the {split} split has {batches} "
            f"batches {per}, and {limit} of {batches} rounds down to 0; give at least "
            f"trainer.{key}={smallest_fraction(batches)}, or a number of batches (e.g. "
            f"trainer.{key}=1)"
        )
