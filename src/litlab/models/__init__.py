"""LightningModules: loss, metrics and optimization around plain nets."""

from litlab.models.autoencoder import VAE, Autoencoder
from litlab.models.classifier import Classifier

__all__ = ["VAE", "Autoencoder", "Classifier"]
