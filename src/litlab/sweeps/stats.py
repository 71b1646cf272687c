"""A metric over seeds: mean, standard deviation, and the 95% confidence interval of the mean by
Student's t, from the standard library alone (the report imports neither torch nor scipy).

For whole degrees of freedom Student's t has a closed distribution function, a finite sum in
θ = atan(t / √df) (Abramowitz & Stegun 26.7.3 and 26.7.4); the quantile is found by bisection
on θ, to the last bit a float holds.
"""

import math
import statistics
from dataclasses import dataclass

LEVEL = 0.95  # the confidence of every interval litlab reports


def t_within(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` degrees of freedom."""
    return _within(math.atan(t / math.sqrt(df)), df)


def _within(theta: float, df: int) -> float:
    cos2, total = math.cos(theta) ** 2, 0.0
    # odd df: (2/π)(θ + sin θ (cos θ + 2/3 cos³θ + ... + (2·4···(df-3))/(1·3···(df-2))cos^(df-2)θ))
    if df % 2:
        term = math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= cos2 * 2 * k / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term = 1.0  # sin θ (1 + 1/2 cos²θ + ... + (1·3···(df-3))/(2·4···(df-2)) cos^(df-2) θ)
    for k in range(1, df // 2 + 1):
        total += term
        term *= cos2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| < t) = `level` (the two-sided critical value: 12.706 for a 95% interval
    on 1 degree of freedom, 1.960 as df grows)."""
    if not (0 < level < 1 and df >= 1):
        raise ValueError(f"t_quantile needs 0 < level < 1 and df >= 1, not {level}, {df}")
    low, high = 0.0, math.pi / 2
    while True:
        mid = (low + high) / 2
        if mid in (low, high):  # no float lies between: θ is exact
            return math.sqrt(df) * math.tan(mid)
        if _within(mid, df) < level:
            low = mid
        else:
            high = mid


@dataclass(frozen=True)
class Summary:
    """Values over seeds. `std` is the sample standard deviation (n - 1); `std`, `low` and
    `high` are nan for a single value, which gives no spread."""

    n: int
    mean: float
    std: float
    low: float  # the 95% confidence interval of the mean (Student's t, n - 1 degrees of freedom)
    high: float
    min: float
    max: float

    def excludes(self, value: float) -> bool:
        """Whether the interval lies wholly above or below `value` (never, without one)."""
        return self.low > value or self.high < value


def summarize(values: list[float]) -> Summary:
    """The summary of one or more values."""
    if not values:
        raise ValueError("summarize needs at least one value")
    n, mean = len(values), statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else math.nan
    half = t_quantile(LEVEL, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return Summary(n, mean, std, mean - half, mean + half, min(values), max(values))
