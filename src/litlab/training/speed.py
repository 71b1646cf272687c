"""Speed applied to a run from outside its model."""

from lightning.pytorch.callbacks import Callback

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
