"""Small building blocks shared by the nets."""

from torch import nn

from litlab.errors import LitlabError
from litlab.kernels import MaxPool2d

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
POOLS = {"max": MaxPool2d, "avg": nn.AvgPool2d}


def activation(name: str) -> nn.Module:
    """The article's activations (sec. 3.1.2) by name."""
    if name not in ACTIVATIONS:
        raise LitlabError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def dense_stack(
    width: int, hidden, act: str, dropout: float, batch_norm: bool = False
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
