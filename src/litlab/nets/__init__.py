"""Architectures as plain `nn.Module`s: no Lightning, no Hydra."""

from litlab.nets.autoencoder import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from litlab.nets.cnn import CNN, SeedCNN
from litlab.nets.mlp import MLP
from litlab.nets.recurrent import RNN, LSTMClassifier, RecurrentClassifier

__all__ = [
    "CNN",
    "MLP",
    "RNN",
    "ConvDecoder",
    "ConvEncoder",
    "LSTMClassifier",
    "MLPDecoder",
    "MLPEncoder",
    "RecurrentClassifier",
    "SeedCNN",
]
