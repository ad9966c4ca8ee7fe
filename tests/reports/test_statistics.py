"""Oracle tests: the statistics fpi computes by hand agree with scipy's."""

import numpy as np
import pytest
from scipy import stats

from fpi.reports.statistics import compare_rates, wilson


@pytest.mark.parametrize(("count", "n"), [(0, 1), (1, 1), (0, 50), (2, 10), (7, 13), (49, 50), (365, 10_000), (5000, 10_000)])
def test_wilson_interval_is_scipys(count, n):
    expected = stats.binomtest(count, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson(count, n)
    assert float(low) == pytest.approx(expected.low, abs=1e-9)
    assert float(high) == pytest.approx(expected.high, abs=1e-9)


@pytest.mark.parametrize(("a", "n", "b", "m"), [(30, 1000, 20, 1000), (60, 1000, 20, 1000), (5, 80, 9, 120), (0, 40, 3, 40)])
def test_two_proportion_z_test_is_scipys_chi_square(a, n, b, m):
    # the pooled two-proportion z-test is the 2x2 chi-square test without continuity correction (z^2 = chi2)
    chi2, p_value, _, _ = stats.chi2_contingency(np.array([[a, n - a], [b, m - b]]), correction=False)
    result = compare_rates(a, n, b, m, alpha=0.05)
    assert result["z"] ** 2 == pytest.approx(chi2, rel=1e-3)
    assert result["p_value"] == pytest.approx(p_value, abs=1e-6)
