import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from litlab.models.base import STAGES, LitModule
from litlab.models.parts import build, config_hparams
from litlab.models.transfer import load_pretrained
from litlab.settings import Compile, Loss, PositiveInt


def classification_loss(name: Loss, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The article's losses (sec. 3.1.3): cross-entropy, or MSE between softmax and one-hot."""
    if name == "cross_entropy":
        return F.cross_entropy(logits, target)
    one_hot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    return F.mse_loss(logits.softmax(dim=-1), one_hot)


class Classifier(LitModule):
    """Trains any net that maps inputs to class logits.

    `net`, `optimizer` (a factory taking `params`) and `scheduler` (a factory taking
    `optimizer`) come built or as Hydra configs; configs are saved as hyperparameters, so
    `Classifier.load_from_checkpoint(path)` rebuilds the whole model. `init_from` names a
    pretraining checkpoint (e.g. a convolutional VAE's) whose encoder trunk is copied into
    the net's `features` when training starts.
    """

    best_of = "acc"

    def __init__(
        self,
        net,
        optimizer,
        scheduler=None,
        loss: Loss = "cross_entropy",
        num_classes: PositiveInt = 10,
        init_from: str | None = None,
        compile: Compile = False,
        channels_last: bool = False,
    ):
        super().__init__(optimizer, scheduler, compile, channels_last)
        self.save_hyperparameters(
            {
                **config_hparams(net=net, optimizer=optimizer, scheduler=scheduler),
                "loss": loss,
                "num_classes": num_classes,
                "init_from": init_from,
            }
        )
        self.net: nn.Module = build(net)
        for stage in STAGES:
            self.metrics[f"{stage}_loss"] = MeanMetric()
            self.metrics[f"{stage}_acc"] = MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = classification_loss(self.hparams.loss, logits, y)
        right = (logits.argmax(dim=-1) == y).float().mean()
        self.tally(stage, len(y), loss=loss, acc=right)
        return loss

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.net(x).softmax(dim=-1)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.init_from and self.trainer.ckpt_path is None:  # not when resuming
            load_pretrained(self.net, self.hparams.init_from)
