import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from litlab.models.parts import build, config_hparams

LOSSES = ("cross_entropy", "mse")
STAGES = ("train", "val", "test")


def classification_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The article's losses (sec. 3.1.3): cross-entropy, or MSE between softmax and one-hot."""
    if name == "cross_entropy":
        return F.cross_entropy(logits, target)
    one_hot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    return F.mse_loss(logits.softmax(dim=-1), one_hot)


class Classifier(L.LightningModule):
    """Trains any net that maps inputs to class logits.

    `net`, `optimizer` (a factory taking `params`) and `scheduler` (a factory taking
    `optimizer`) come built or as Hydra configs; configs are saved as hyperparameters, so
    `Classifier.load_from_checkpoint(path)` rebuilds the whole model.
    """

    def __init__(
        self, net, optimizer, scheduler=None, loss: str = "cross_entropy", num_classes: int = 10
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
        self.save_hyperparameters(
            {
                **config_hparams(net=net, optimizer=optimizer, scheduler=scheduler),
                "loss": loss,
                "num_classes": num_classes,
            }
        )
        self.net: nn.Module = build(net)
        self.optimizer_factory = build(optimizer)
        self.scheduler_factory = build(scheduler)
        # Per-stage metrics are updated each step and logged once per epoch: a `self.log` per
        # step costs more than a small net's whole training step. ModuleDict keys must not
        # shadow nn.Module attributes such as `train`, hence the suffixes.
        self.metrics = nn.ModuleDict()
        for stage in STAGES:
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes, validate_args=False)
            self.metrics[f"{stage}_loss"] = MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = classification_loss(self.hparams.loss, logits, y)
        self.metrics[f"{stage}_acc"].update(logits.detach(), y)
        self.metrics[f"{stage}_loss"].update(loss.detach(), weight=len(y))
        return loss

    def log_epoch(self, stage: str) -> None:
        for name in ("loss", "acc"):
            self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], prog_bar=True)

    def training_step(self, batch, batch_idx):
        loss = self.step(batch, "train")
        if batch_idx % self.trainer.log_every_n_steps == 0:  # the running loss, for the bar
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.step(batch, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.net(x).softmax(dim=-1)

    def on_fit_start(self) -> None:
        # States left by an earlier validate/test are inference tensors, which fit's no-grad
        # validation cannot update in place: start from fresh ones.
        for metric in self.metrics.values():
            metric.reset()

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity check's numbers

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best.update(self.metrics["val_acc"].compute())
        self.log_epoch("val")
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer)}
