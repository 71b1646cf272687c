from litlab.data.base import Modality
from litlab.data.image_folder import ImageFolderDataModule
from litlab.data.images import InMemoryImages
from litlab.data.mnist import DATASETS, MNISTDataModule
from litlab.data.text import PaddedTokens, TextDataModule

__all__ = [
    "DATASETS",
    "ImageFolderDataModule",
    "InMemoryImages",
    "MNISTDataModule",
    "Modality",
    "PaddedTokens",
    "TextDataModule",
]
