from litlab.data.mnist import DATASETS, InMemoryImages, MNISTDataModule

__all__ = ["DATASETS", "InMemoryImages", "MNISTDataModule"]
