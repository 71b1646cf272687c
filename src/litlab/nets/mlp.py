from collections.abc import Sequence
from math import prod

from torch import nn

from litlab.nets.layers import dense_stack
from litlab.settings import Activation, PositiveInt, Shape, Share


class MLP(nn.Module):
    """Fully connected net: y = f(W x + b) per layer (sec. 3.1.1), logits out."""

    def __init__(
        self,
        input_shape: Shape = (1, 28, 28),
        num_classes: PositiveInt = 10,
        hidden: Sequence[PositiveInt] = (256, 128),
        activation: Activation = "relu",
        dropout: Share = 0.0,
    ):
        super().__init__()
        layers, width = dense_stack(prod(input_shape), hidden, activation, dropout)
        self.layers = nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.layers(x)
