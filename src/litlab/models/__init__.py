"""LightningModules: loss, metrics and optimization around a plain net."""

from litlab.models.classifier import Classifier

__all__ = ["Classifier"]
