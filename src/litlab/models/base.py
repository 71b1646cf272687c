import inspect
from collections.abc import Mapping

import lightning.pytorch as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from litlab import objective
from litlab.models.parts import build
from litlab.settings import Compile
from litlab.speed import Speed, without_idle_batch_hooks

STAGES = ("train", "val", "test")


class LitModule(L.LightningModule):
    """What litlab's LightningModules share.

    One `step(batch, stage)` serves train, val and test. It hands each batch's means to
    `tally`, which adds them up on the device; once an epoch they become the per-stage metrics
    (`self.metrics`, torchmetrics means keyed `<stage>_<name>`, which reduce across DDP ranks
    themselves), logged as `<stage>/<name>`. A torchmetrics update, a `self.log` or a host sync
    per step would cost more than a small net's whole step. The best validation value of
    `best_of` is tracked as `val/<name>_best`, and kept in checkpoints.

    How fast this runs is not its business: `compile` and `channels_last` are handed to the
    `litlab.speed.Speed` callback it gives its Trainer, which compiles the nets named in `nets`,
    sets their memory format, and takes the optimizer step.
    """

    best_of: str = "loss"  # the metric whose best validation value is tracked
    nets: tuple[str, ...] = ("net",)

    def __init__(
        self, optimizer, scheduler=None, compile: Compile = False, channels_last: bool = False
    ):
        super().__init__()
        self.optimizer_factory = build(optimizer)
        # `interval: step` in a scheduler's config (Lightning's word) steps it after every
        # batch, as a one-cycle schedule needs; by default it steps once an epoch.
        scheduler = dict(scheduler) if isinstance(scheduler, Mapping) else scheduler
        schedule = scheduler if isinstance(scheduler, dict) else {}
        self.scheduler_interval = schedule.pop("interval", "epoch")
        self.scheduler_factory = build(scheduler)
        self.speed = Speed(compile, channels_last)
        self.metrics = nn.ModuleDict()  # suffixed keys: `train` would shadow nn.Module.train
        self.running: dict[str, tuple[dict[str, torch.Tensor], int]] = {}  # see `tally`
        self.val_best = MaxMetric() if objective.mode(self.best_of) == "max" else MinMetric()

    def step(self, batch, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def tally(self, stage: str, count: int, **means: torch.Tensor) -> None:
        """Add a batch's `means` (over its `count` examples) to the stage's running sums, on
        the device; `flush` hands them to the metrics `<stage>_<name>`."""
        if stage not in self.running:
            zeros = {name: mean.new_zeros((), dtype=torch.float32) for name, mean in means.items()}
            self.running[stage] = zeros, 0
        sums, seen = self.running[stage]
        for name, mean in means.items():
            sums[name].add_(mean.detach(), alpha=count)
        self.running[stage] = sums, seen + count

    def flush(self, stage: str) -> None:
        """The stage's running means into its metrics (one update each), and a fresh start."""
        if stage in self.running:
            sums, count = self.running.pop(stage)
            for name, total in sums.items():
                self.metrics[f"{stage}_{name}"].update(total / count, weight=count)

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
        self.flush(stage)
        for key, metric in self.metrics.items():
            if key.startswith(f"{stage}_"):
                self.log(f"{stage}/{key[len(stage) + 1 :]}", metric, prog_bar=True)

    def on_fit_start(self) -> None:
        # States left by an earlier validate/test are inference tensors, which fit's no-grad
        # validation cannot update in place: start from fresh ones.
        for metric in self.metrics.values():
            metric.reset()
        self.running.clear()

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
        name = self.best_of
        self.flush("val")
        if not self.trainer.sanity_checking:  # a few batches: no result to remember
            self.val_best.update(self.metrics[f"val_{name}"].compute())
            best = self.val_best.compute()  # the same on every rank: its input was reduced
            self.log(f"val/{name}_best", best, prog_bar=True, sync_dist=True)
            self.log(objective.PARAMETERS, float(self.parameter_count), sync_dist=False)
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def configure_callbacks(self):
        trainer = self._trainer
        if trainer is not None and self.speed in trainer.callbacks:  # its test after its fit
            return []
        return [without_idle_batch_hooks(self.speed)]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, **self.schedule_length())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def schedule_length(self) -> dict:
        """`total_steps` for a scheduler that takes it and was given no length: the whole run."""
        factory = self.scheduler_factory
        given = getattr(factory, "keywords", {})
        takes = inspect.signature(getattr(factory, "func", factory)).parameters
        if "total_steps" not in takes or {"total_steps", "epochs"} & given.keys():
            return {}
        return {"total_steps": int(self.trainer.estimated_stepping_batches)}
