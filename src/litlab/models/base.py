import lightning.pytorch as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from litlab.models.parts import build

STAGES = ("train", "val", "test")


class LitModule(L.LightningModule):
    """What litlab's LightningModules share.

    One `step(batch, stage)` serves train, val and test. Per-stage metrics (`self.metrics`,
    keyed `<stage>_<name>`) are updated every step and logged once per epoch as
    `<stage>/<name>`: a `self.log` per step costs more than a small net's whole step. The
    metrics reduce across DDP ranks themselves. The best validation value of `best_of` is
    tracked as `val/<name>_best`, and kept in checkpoints.
    """

    best_of: tuple[str, str] = ("loss", "min")  # (metric name, "min" | "max")

    def __init__(self, optimizer, scheduler=None):
        super().__init__()
        self.optimizer_factory = build(optimizer)
        self.scheduler_factory = build(scheduler)
        self.metrics = nn.ModuleDict()  # suffixed keys: `train` would shadow nn.Module.train
        self.val_best = MaxMetric() if self.best_of[1] == "max" else MinMetric()

    def step(self, batch, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self.step(batch, "train")
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:  # the steps the loggers write
            self.log(
                "train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True
            )
        return loss

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.step(batch, "test")

    def log_epoch(self, stage: str) -> None:
        for key, metric in self.metrics.items():
            if key.startswith(f"{stage}_"):
                self.log(f"{stage}/{key[len(stage) + 1 :]}", metric, prog_bar=True)

    def on_fit_start(self) -> None:
        # States left by an earlier validate/test are inference tensors, which fit's no-grad
        # validation cannot update in place: start from fresh ones.
        for metric in self.metrics.values():
            metric.reset()

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # resumed: keep the best the checkpoint holds
            self.val_best.reset()  # forget a `validate` before `fit`

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["val_best"] = self.val_best.metric_state  # a resumed run remembers its best

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name, value in checkpoint.get("val_best", {}).items():
            setattr(self.val_best, name, value.to(self.device))

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        name = self.best_of[0]
        if not self.trainer.sanity_checking:  # a few batches: no result to remember
            self.val_best.update(self.metrics[f"val_{name}"].compute())
            best = self.val_best.compute()  # the same on every rank: its input was reduced
            self.log(f"val/{name}_best", best, prog_bar=True, sync_dist=True)
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer)}
