"""Encoders and decoders for autoencoders (sec. 3.4): z = f_e(x), x_hat = f_d(z).

Encoders end in `out_features` numbers: the code z for an autoencoder, [mu, log variance] for a
VAE. Decoders return logits of the pixels (sigmoid gives intensities in [0, 1]).
"""

from collections.abc import Sequence
from math import prod
from typing import Annotated

import torch
from torch import nn

from litlab.nets.cnn import CNN
from litlab.nets.layers import dense_stack
from litlab.settings import Activation, Count, Pool, PositiveInt, Range, Shape


class MLPEncoder(nn.Module):
    def __init__(
        self,
        input_shape: Shape = (1, 28, 28),
        out_features: PositiveInt = 40,
        hidden: Sequence[PositiveInt] = (512, 256),
        activation: Activation = "relu",
        batch_norm: bool = False,
    ):
        super().__init__()
        layers, width = dense_stack(prod(input_shape), hidden, activation, 0.0, batch_norm)
        self.layers = nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, out_features))

    def forward(self, x):
        return self.layers(x)


class MLPDecoder(nn.Module):
    def __init__(
        self,
        latent_dim: PositiveInt = 20,
        output_shape: Shape = (1, 28, 28),
        hidden: Sequence[PositiveInt] = (256, 512),
        activation: Activation = "relu",
        batch_norm: bool = False,
    ):
        super().__init__()
        layers, width = dense_stack(latent_dim, hidden, activation, 0.0, batch_norm)
        self.layers = nn.Sequential(
            *layers, nn.Linear(width, prod(output_shape)), nn.Unflatten(1, tuple(output_shape))
        )

    def forward(self, z):
        return self.layers(z)


class ConvEncoder(CNN):
    """The convolutional classifier's trunk (`features`) with a linear head to `out_features`,
    so a classifier built with the same `channels`, `kernel_size` and pooling takes its weights."""

    def __init__(
        self,
        input_shape: Shape = (1, 28, 28),
        out_features: PositiveInt = 40,
        channels: Sequence[PositiveInt] = (32, 64, 64),
        kernel_size: PositiveInt | Sequence[PositiveInt] = 3,
        pool: Pool = "max",
        pooled_blocks: Count | None = None,
        activation: Activation = "relu",
    ):
        super().__init__(
            input_shape,
            out_features,
            channels,
            kernel_size,
            pool,
            pooled_blocks,
            hidden=(),
            activation=activation,
        )


class ConvDecoder(nn.Module):
    """Linear to a 64 x 7 x 7 map, then two stride-2 transposed convolutions up to 28 x 28."""

    def __init__(
        self,
        latent_dim: PositiveInt = 20,
        output_shape: Shape = (1, 28, 28),
        channels: Annotated[int, Range(low=2)] = 64,  # halved once
    ):
        super().__init__()
        side = output_shape[-1] // 4
        self.layers = nn.Sequential(
            nn.Linear(latent_dim, channels * side * side),
            nn.ReLU(),
            nn.Unflatten(1, (channels, side, side)),
            nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels // 2, output_shape[0], 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)
