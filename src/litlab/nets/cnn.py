from collections.abc import Sequence

import torch
from torch import nn

from litlab.errors import LitlabError
from litlab.nets import layers
from litlab.nets.layers import POOLS, dense_stack
from litlab.settings import Activation, Count, Pool, PositiveInt, Shape, Share


class CNN(nn.Module):
    """Conv blocks (conv -> activation -> 2x2 pool) feeding a dense head (sec. 3.2).

    `kernel_size` is one size for every conv, or one per block. `pooled_blocks` leading blocks
    are followed by pooling (default: all but the last).
    `features` is the convolutional trunk, shared with the convolutional VAE encoder.
    A ReLU block max-pools before its ReLU: the two commute exactly, outputs and gradients
    alike, and the ReLU (and its backward) then touch a quarter of the values.
    """

    def __init__(
        self,
        input_shape: Shape = (1, 28, 28),
        num_classes: PositiveInt = 10,
        channels: Sequence[PositiveInt] = (32, 64, 64),
        kernel_size: PositiveInt | Sequence[PositiveInt] = 3,  # one for all blocks, or one each
        pool: Pool = "max",
        pooled_blocks: Count | None = None,
        hidden: Sequence[PositiveInt] = (64,),
        activation: Activation = "relu",
        dropout: Share = 0.0,
    ):
        super().__init__()
        pooled_blocks = len(channels) - 1 if pooled_blocks is None else pooled_blocks
        kernel_sizes = (
            [kernel_size] * len(channels) if isinstance(kernel_size, int) else kernel_size
        )
        if len(kernel_sizes) != len(channels):
            raise LitlabError(
                f"kernel_size={list(kernel_sizes)} gives {len(kernel_sizes)} sizes for "
                f"{len(channels)} conv blocks; give one size, or one per block"
            )
        blocks: list[nn.Module] = []
        in_channels = input_shape[0]
        for i, (out_channels, size) in enumerate(zip(channels, kernel_sizes, strict=True)):
            block = [layers.activation(activation)]
            if i < pooled_blocks:
                pooling = POOLS[pool](2)
                pool_first = pool == "max" and activation == "relu"
                block = [pooling, *block] if pool_first else [*block, pooling]
            blocks += [nn.Conv2d(in_channels, out_channels, size), *block]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        head, width = dense_stack(flat, hidden, activation, dropout)
        self.head = nn.Sequential(nn.Flatten(), *head, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class SeedCNN(CNN):
    """The article's Keras CNN for MNIST (sec. 4.1), layer for layer, with Keras' initializers.

    Conv(32,3x3)-ReLU-MaxPool(2)-Conv(64,3x3)-ReLU-MaxPool(2)-Conv(64,3x3)-ReLU-Flatten
    -Dense(64)-ReLU-Dense(10): 93,322 parameters. (Each max-pool runs before its ReLU: the same
    function, see `CNN`.)
    """

    def __init__(self, input_shape: Shape = (1, 28, 28), num_classes: PositiveInt = 10):
        super().__init__(
            input_shape,
            num_classes,
            channels=(32, 64, 64),
            kernel_size=3,
            pool="max",
            pooled_blocks=2,
            hidden=(64,),
            activation="relu",
        )
        for module in self.modules():  # Keras defaults: glorot_uniform kernels, zero biases
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
