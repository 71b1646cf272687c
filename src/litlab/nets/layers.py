"""Small building blocks shared by the nets."""

from torch import nn

from litlab.kernels import MaxPool2d
from litlab.settings import Activation, Pool

# By the names litlab.settings lists (tests/test_config.py holds the two together).
ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}
POOLS: dict[Pool, type[nn.Module]] = {"max": MaxPool2d, "avg": nn.AvgPool2d}


def activation(name: Activation) -> nn.Module:
    """The article's activations (sec. 3.1.2) by name."""
    return ACTIVATIONS[name]()


def dense_stack(
    width: int, hidden, act: Activation, dropout: float, batch_norm: bool = False
) -> tuple[list[nn.Module], int]:
    """Linear (-> batch norm) -> activation (-> dropout) per hidden width; returns the layers
    and the last width."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(activation(act))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return layers, width
