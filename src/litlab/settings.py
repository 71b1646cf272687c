"""The words litlab's classes annotate their settings with: numbers with bounds and the lists of
choices. A class's annotated signature is the one statement of what it takes; the config check
(`litlab.config.check`) reads it from there, and the code reads the same choice lists.

No torch here: every command line is checked before torch is imported.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict


@dataclass(frozen=True)
class Range:
    """Bounds on a number: `low`/`high` inclusive, `above`/`below` exclusive."""

    low: float | None = None
    above: float | None = None
    below: float | None = None
    high: float | None = None

    def holds(self, value) -> bool:
        return not (
            (self.low is not None and value < self.low)
            or (self.above is not None and value <= self.above)
            or (self.below is not None and value >= self.below)
            or (self.high is not None and value > self.high)
        )

    def words(self) -> str:
        if self.low is not None and (self.below, self.high) != (None, None):
            return (
                f"in [{self.low}, {self.high}]"
                if self.below is None
                else f"in [{self.low}, {self.below})"
            )
        if self == Range(above=0) or self == Range(low=1):
            return "positive"
        if self == Range(low=0):
            return "non-negative"
        bounds = [(">=", self.low), (">", self.above), ("<", self.below), ("<=", self.high)]
        return " and ".join(f"{sign} {bound}" for sign, bound in bounds if bound is not None)


PositiveInt = Annotated[int, Range(low=1)]
Count = Annotated[int, Range(low=0)]  # zero allowed: none of them
Positive = Annotated[float, Range(above=0)]
NonNegative = Annotated[float, Range(low=0)]
Share = Annotated[float, Range(low=0, below=1)]  # dropout, a split's fraction
Fraction = Annotated[float, Range(low=0, high=1)]
Shape = Sequence[PositiveInt]

Activation = Literal["relu", "sigmoid", "tanh"]
Pool = Literal["max", "avg"]
Cell = Literal["rnn", "lstm", "gru"]
CellImpl = Literal["torch", "compiled", "triton"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
Reconstruction = Literal["bce", "mse"]
Loss = Literal["cross_entropy", "mse"]
Mode = Literal["max", "min"]
MNISTFamily = Literal["mnist", "fashion_mnist"]
TrainWindow = Literal["first", "random"]  # which part of a long text a training batch shows


class CompileOptions(TypedDict, total=False):
    mode: CompileMode
    dynamic: bool | None
    fullgraph: bool


# torch.compile's settings for a model: off, a mode, or torch.compile's keywords.
Compile = Literal[False] | CompileMode | CompileOptions | None
