from litlab.data.mnist import DATASETS, InMemoryImages, MNISTDataModule
from litlab.data.text import PaddedTokens, TextDataModule

__all__ = ["DATASETS", "InMemoryImages", "MNISTDataModule", "PaddedTokens", "TextDataModule"]
