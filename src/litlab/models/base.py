import inspect
from collections.abc import Mapping
from types import MethodType

import lightning.pytorch as L
import torch
from lightning.pytorch.plugins import Precision
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from litlab.models.parts import build
from litlab.run import objective
from litlab.settings import Compile
from litlab.training.loggers import CSVLogger

STAGES = ("train", "val", "test")


def compile_options(compile: Compile) -> dict | None:
    """`torch.compile` arguments from `model.compile`: false, a mode, or a mapping of
    `mode`, `dynamic`, `fullgraph`."""
    if compile is None or compile is False:
        return None
    return {"mode": compile} if isinstance(compile, str) else dict(compile)


def tensor_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Hold the learning rates as tensors: a compiled update then reads a new rate instead of
    recompiling for it (schedulers fill such tensors in place)."""
    for group in optimizer.param_groups:
        group["lr"] = torch.as_tensor(group["lr"])


def compile_update(optimizer: torch.optim.Optimizer) -> None:
    """Compile `optimizer`'s update into one graph (Inductor's C++ on CPU, Triton on GPU).

    Its learning rates become tensors (`tensor_learning_rates`). Lightning passes `step` a
    closure (forward and backward), which runs first, eagerly. Call it before a scheduler wraps
    the optimizer's `step`.
    """
    tensor_learning_rates(optimizer)
    # Traced with its profiler record (which Dynamo would otherwise drop, with a warning)
    capture_record = torch._dynamo.config.patch(capture_profiler_record_function=True)
    update = capture_record(torch.compile(optimizer.step))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        update()
        return loss

    optimizer.step = MethodType(step, optimizer)  # a method, as schedulers wrap it


class LitModule(L.LightningModule):
    """What litlab's LightningModules share.

    One `step(batch, stage)` serves train, val and test. It hands each batch's means to
    `tally`, which adds them up on the device; once an epoch they become the per-stage metrics
    (`self.metrics`, torchmetrics means keyed `<stage>_<name>`, which reduce across DDP ranks
    themselves), logged as `<stage>/<name>`. A torchmetrics update, a `self.log` or a host sync
    per step would cost more than a small net's whole step. The best validation value of
    `best_of` is tracked as `val/<name>_best`, and kept in checkpoints.

    The optimizer step is taken in `training_step` (manual optimization, through Lightning's
    optimizer and precision plugin) unless the Trainer clips or accumulates gradients, which
    Lightning allows only in its own, costlier loop (`automatic_optimization`).

    `compile` compiles the nets named in `nets` in place (`nn.Module.compile`) when a Trainer
    first uses the model, so state-dict keys stay those of the eager nets. It compiles the
    optimizer's update too (`compile_update`) unless the optimizer config asks for torch's fused
    kernel (`fused: true`): the compiled nets speed up forward and backward, the compiled
    update the rest of the step.
    `channels_last` keeps the nets' weights and 4-D inputs in that memory format (faster
    convolutions and pooling on CPU and GPU).
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
        self.compile_options = compile_options(compile)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.metrics = nn.ModuleDict()  # suffixed keys: `train` would shadow nn.Module.train
        self.running: dict[str, tuple[dict[str, torch.Tensor], int]] = {}  # see `tally`
        self.val_best = MaxMetric() if objective.mode(self.best_of) == "max" else MinMetric()

    @property
    def automatic_optimization(self) -> bool:
        # Lightning clips and accumulates gradients only in its own loop; elsewhere `optimize`
        trainer = self._trainer
        return trainer is not None and (
            bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches != 1
        )

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

    def configure_model(self) -> None:
        for name in self.nets:
            net = getattr(self, name).to(memory_format=self.memory_format)
            if self.compile_options is not None and net._compiled_call_impl is None:
                net.compile(**self.compile_options)

    def formatted(self, batch):
        """The batch with its 4-D input in the nets' memory format."""
        x = batch[0]
        if self.memory_format is not torch.channels_last or getattr(x, "ndim", 0) != 4:
            return batch
        return [x.contiguous(memory_format=self.memory_format), *batch[1:]]

    def training_step(self, batch, batch_idx):
        loss = self.step(self.formatted(batch), "train")
        if not self.automatic_optimization:
            self.optimize(loss, batch_idx)
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:  # the steps the loggers write
            self.log(
                "train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True
            )
        return loss

    def optimize(self, loss: torch.Tensor, batch_idx: int) -> None:
        """The step Lightning's automatic loop would take: zero the gradients, backward and
        step through the precision plugin and strategy (AMP, DDP), then the scheduler: every
        batch for `interval: step`, else after the epoch's last batch (before validation and
        its checkpoint, as Lightning does)."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        scheduler = self.lr_schedulers()
        last = batch_idx + 1 == self.trainer.num_training_batches or self.trainer.is_last_batch
        if scheduler is not None and (self.scheduler_interval == "step" or last):
            scheduler.step()

    def validation_step(self, batch, batch_idx):
        self.step(self.formatted(batch), "val")

    def test_step(self, batch, batch_idx):
        self.step(self.formatted(batch), "test")

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
        if self.compiles_update():  # an eager run's checkpoint restored float learning rates
            for optimizer in self.trainer.optimizers:
                tensor_learning_rates(optimizer)
        if self.trainer.ckpt_path is None:  # resumed: keep the best the checkpoint holds
            self.val_best.reset()  # forget a `validate` before `fit`
        elif self.trainer.is_global_zero:  # what came after the checkpoint is trained again
            for logger in self.loggers:
                if isinstance(logger, CSVLogger):
                    logger.forget_after(self.trainer.global_step)

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
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Lightning refuses to clip a fused optimizer's gradients under mixed precision, for
        # fp16's loss scaler; bf16 has no scaler, so its gradients are clipped as they are.
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and getattr(plugin, "precision", None) == "bf16-mixed":
            algorithm = gradient_clip_algorithm or "norm"
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
        else:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )

    def compiles_update(self) -> bool:
        """Whether the optimizer's update is compiled: with the nets, unless it is fused."""
        fused = getattr(self.optimizer_factory, "keywords", {}).get("fused")
        return self.compile_options is not None and not fused

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.compiles_update():
            compile_update(optimizer)
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
