"""Architectures as plain `nn.Module`s: no Lightning, no Hydra."""

from litlab.nets.cnn import CNN, SeedCNN
from litlab.nets.mlp import MLP

__all__ = ["CNN", "MLP", "SeedCNN"]
