"""Max-pooling that a CPU compile leaves to ATen.

Inductor writes its own C++ for max-pooling and its backward; on CPU that code measured slower
than ATen's kernels (docs/benchmarks.md), so under `torch.compile` on CPU the pooling runs as
one opaque op calling ATen, forward and backward, and Inductor compiles the rest of the net
around it. Eager, exported and GPU runs use `nn.MaxPool2d` as it is.
"""

import torch
from torch import Tensor, nn

aten = torch.ops.aten
FLEXIBLE = (torch.Tag.flexible_layout,)  # any layout the compiler picks: ATen pools all alike


@torch.library.custom_op("litlab::max_pool2d", mutates_args=(), tags=FLEXIBLE)
def max_pool2d(x: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """`size` x `size` windows, stride `size`: the pooled values and their flat indices."""
    return aten.max_pool2d_with_indices(x, [size, size], [size, size])


@torch.library.custom_op("litlab::max_pool2d_backward", mutates_args=(), tags=FLEXIBLE)
def max_pool2d_backward(grad: Tensor, x: Tensor, indices: Tensor, size: int) -> Tensor:
    return aten.max_pool2d_with_indices_backward(
        grad, x, [size, size], [size, size], [0, 0], [1, 1], False, indices
    )


@max_pool2d.register_fake
def _(x, size):
    return aten.max_pool2d_with_indices(x, [size, size], [size, size])


@max_pool2d_backward.register_fake
def _(grad, x, indices, size):
    return torch.empty_like(x)


def _save(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])
    ctx.size = inputs[1]


def _backward(ctx, grad, _):
    x, indices = ctx.saved_tensors
    return max_pool2d_backward(grad, x, indices, ctx.size), None


max_pool2d.register_autograd(_backward, setup_context=_save)


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d(size)` whose CPU compile calls ATen's kernels (see the module's note)."""

    def __init__(self, size: int):  # square windows, stride `size`: what the op computes
        super().__init__(size)

    def forward(self, x: Tensor) -> Tensor:
        to_aten = x.device.type == "cpu" and not torch.compiler.is_exporting()
        if torch.compiler.is_compiling() and to_aten:
            return max_pool2d(x, self.kernel_size)[0]
        return super().forward(x)
