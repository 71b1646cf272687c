import lightning.pytorch as L
from torch.utils.data import DataLoader


def whole_batch(batch):
    """Collate for datasets whose `__getitems__` already returns a whole batch."""
    return batch


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
