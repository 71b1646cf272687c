"""Speed, applied to a run from outside its model.

A LitModule holds its step, its loss and its metrics. How fast that runs is said by
`model.compile` and `model.channels_last` (and the `speed=` presets that set them), and done
here by `Speed`, the callback a LitModule hands any Trainer it is fitted with:

- its nets' weights in channels-last (convolutions and pooling then run in that format, which is
  faster on CPU and GPU) and the nets compiled in place (`nn.Module.compile`, so state-dict keys
  stay those of the eager nets);
- the optimizer's update compiled into one graph (Inductor's C++ on CPU, Triton on GPU), unless
  the optimizer config asks for torch's fused kernel (`fused: true`);
- the optimizer stepped right after the training step (`update`) rather than by Lightning's
  automatic loop, which costs more per step; Lightning's loop is kept where it clips or
  accumulates gradients, which it allows only there;
- bf16 gradients clipped as fp32's are (Lightning refuses to clip a fused optimizer's gradients
  under mixed precision, for fp16's loss scaler, which bf16 does not have).

Beside it, two trims of Lightning's per-batch overhead that the trainer build applies:
`without_idle_batch_hooks` and `ask_cuda_without_nvml_where_no_driver`.
"""

import ctypes
import os
from functools import partial
from types import MethodType

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import Precision

from litlab.settings import Compile

# The hooks Lightning calls once per batch (or per optimizer step), on every callback.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def without_idle_batch_hooks(callback: Callback) -> Callback:
    """`callback` with the batch hooks it inherits unchanged from `Callback` set to None.

    Lightning calls each hook on every callback, inside a profiler context, whether or not the
    callback does anything there, and skips an attribute that is not callable: with the default
    callbacks, those empty calls are a good share of a small net's training step on a CPU.
    """
    for hook in BATCH_HOOKS:
        if getattr(type(callback), hook) is getattr(Callback, hook) and hook not in vars(callback):
            setattr(callback, hook, None)
    return callback


def ask_cuda_without_nvml_where_no_driver() -> None:
    """Lightning makes torch ask NVML whether a GPU is here, so that asking does not start CUDA
    in a process that forks later. Where no NVIDIA driver is installed, NVML fails to load and
    torch tries again at every optimizer step (about 30 us each, a few percent of a small net's
    step on a CPU). Without a driver there is no CUDA to start, so the direct check is as safe."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


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
    """Compile `optimizer`'s update into one graph.

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


def update(module, loss: torch.Tensor, batch_idx: int) -> None:
    """The step Lightning's automatic loop would take after `module`'s training step: zero the
    gradients, backward and step through the precision plugin and strategy (AMP, DDP), then
    the scheduler: every batch for `interval: step`, else after the epoch's last batch (before
    validation and its checkpoint, as Lightning does)."""
    optimizer = module.optimizers()
    optimizer.zero_grad()
    module.manual_backward(loss)
    optimizer.step()
    scheduler = module.lr_schedulers()
    trainer = module.trainer
    last = batch_idx + 1 == trainer.num_training_batches or trainer.is_last_batch
    if scheduler is not None and (module.scheduler_interval == "step" or last):
        scheduler.step()


def stepping_after(training_step):
    """`training_step` followed by the optimizer's `update`."""

    def step_and_update(batch, batch_idx):
        loss = training_step(batch, batch_idx)
        update(training_step.__self__, loss, batch_idx)
        return loss

    return step_and_update


def with_compiled_update(make_optimizer):
    """An optimizer factory whose optimizers come with their update compiled."""

    def make(**kwargs):
        optimizer = make_optimizer(**kwargs)
        compile_update(optimizer)
        return optimizer

    make.compiled = True
    return make


class Speed(Callback):
    """Makes a LitModule's training fast, from `model.compile` and `model.channels_last`: see
    the module's docstring. The LitModule returns it from `configure_callbacks`, so every Trainer
    applies it, litlab's or a notebook's own."""

    def __init__(self, compile: Compile = False, channels_last: bool = False):
        self.compile = compile_options(compile)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def compiles_update(self, module) -> bool:
        """Whether the optimizer's update is compiled: with the nets, unless it is fused."""
        fused = getattr(module.optimizer_factory, "keywords", {}).get("fused")
        return self.compile is not None and not fused

    def setup(self, trainer, pl_module, stage: str) -> None:
        for name in pl_module.nets:
            net = getattr(pl_module, name).to(memory_format=self.memory_format)
            if self.compile is not None and net._compiled_call_impl is None:
                net.compile(**self.compile)
        factory = pl_module.optimizer_factory
        if self.compiles_update(pl_module) and not getattr(factory, "compiled", False):
            pl_module.optimizer_factory = with_compiled_update(factory)
        # litlab's own step, unless Lightning must clip or accumulate in its loop
        automatic = bool(trainer.gradient_clip_val) or trainer.accumulate_grad_batches != 1
        pl_module.automatic_optimization = automatic
        vars(pl_module).pop("training_step", None)
        if not automatic:
            pl_module.training_step = stepping_after(pl_module.training_step)
        plugin = trainer.precision_plugin
        if getattr(plugin, "precision", None) == "bf16-mixed":  # no loss scaler to refuse for
            plugin.clip_gradients = partial(Precision.clip_gradients, plugin)

    def on_train_start(self, trainer, pl_module) -> None:
        # A compiled update reads tensor rates; an eager run's checkpoint restored floats.
        if getattr(pl_module.optimizer_factory, "compiled", False):
            for optimizer in trainer.optimizers:
                tensor_learning_rates(optimizer)
