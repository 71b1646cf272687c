"""Accelerated paths behind the same interfaces as the eager ones, selected by config."""

from litlab.kernels.pooling import MaxPool2d
from litlab.kernels.recurrent import CompiledRecurrent

__all__ = ["CompiledRecurrent", "MaxPool2d"]
