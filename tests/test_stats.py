"""litlab.sweeps.stats: the t quantile and the summary over seeds, against closed forms and
tables."""

import math

import pytest

from litlab.sweeps.stats import summarize, t_quantile, t_within


def test_the_t_quantile_is_that_of_the_closed_forms_and_the_tables():
    # 1 degree of freedom is Cauchy's: P(|T| < t) = 2 atan(t) / π; 2 is t / √(2 + t²).
    assert t_quantile(0.95, 1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-12)
    assert t_quantile(0.95, 2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95**2)), rel=1e-12)
    # Two-sided 95% critical values as printed in the tables (six decimals).
    table = {3: 3.182446, 4: 2.776445, 9: 2.262157, 29: 2.045230, 120: 1.979930}
    for df, t in table.items():
        assert t_quantile(0.95, df) == pytest.approx(t, abs=1e-6)
    assert t_quantile(0.99, 4) == pytest.approx(4.604095, abs=1e-6)
    assert t_quantile(0.95, 100_000) == pytest.approx(1.959964, abs=1e-4)  # the normal's


def test_the_t_distribution_is_scipys():
    stats = pytest.importorskip("scipy.stats", reason="scipy checks every df, where installed")
    for df in range(1, 60):
        for t in (0.1, 1.0, 2.5, 10.0):
            assert t_within(t, df) == pytest.approx(1 - 2 * stats.t.sf(t, df), rel=1e-12)
        assert t_quantile(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)


def test_the_summary_of_three_values_by_hand():
    s = summarize([0.90, 0.94, 0.92])
    assert (s.n, s.min, s.max) == (3, 0.90, 0.94)
    assert s.mean == pytest.approx(0.92)
    assert s.std == pytest.approx(0.02)  # √((0.02² + 0.02²) / 2)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert (s.low, s.high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    assert s.excludes(0.8) and not s.excludes(0.9)


def test_one_value_has_no_spread_and_no_interval():
    s = summarize([0.5])
    assert (s.n, s.mean, s.min, s.max) == (1, 0.5, 0.5, 0.5)
    assert math.isnan(s.std) and math.isnan(s.low) and math.isnan(s.high)
    assert not s.excludes(0)  # no interval shows a difference
    with pytest.raises(ValueError):
        summarize([])
