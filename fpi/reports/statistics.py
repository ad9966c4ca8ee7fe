"""Interval estimates and tests for rates: what a report says with every number."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
CONFIDENCE = 0.95
DIGITS = 6


def wilson(count: np.ndarray | float, n: np.ndarray | float, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion: sound at rates near 0 and small n, unlike p ± z·se."""
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, count / n, 0.0)
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
        low = np.where((n > 0) & (count > 0), centre - half, 0.0)  # exact at the ends, not 1e-18
        high = np.where((n > 0) & (count < n), centre + half, 1.0)
    return np.clip(low, 0, 1), np.clip(high, 0, 1)


def rate(count: int, n: int) -> dict:
    """A count as a rate of n with its Wilson interval."""
    low, high = wilson(count, n)
    return {"count": int(count), "rate": round(count / n, DIGITS) if n else 0.0,
            "ci_low": round(float(low), DIGITS), "ci_high": round(float(high), DIGITS)}


def compare_rates(count: int, n: int, base_count: int, base_n: int, alpha: float) -> dict:
    """Change of a rate against a baseline: Newcombe's interval for the difference (from the
    two Wilson intervals) and the two-proportion z-test with a pooled variance."""
    p, q = count / n if n else 0.0, base_count / base_n if base_n else 0.0
    (low, high), (base_low, base_high) = (tuple(map(float, wilson(count, n))), tuple(map(float, wilson(base_count, base_n))))
    change = p - q
    pooled = (count + base_count) / (n + base_n) if n + base_n else 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / base_n)) if n and base_n else 0.0
    z = change / se if se else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2)) if se else 1.0
    significant = p_value < alpha
    return {
        "rate": round(p, DIGITS), "baseline_rate": round(q, DIGITS), "change": round(change, DIGITS),
        "change_ci_low": round(change - math.sqrt((p - low) ** 2 + (base_high - q) ** 2), DIGITS),
        "change_ci_high": round(change + math.sqrt((high - p) ** 2 + (q - base_low) ** 2), DIGITS),
        "z": round(z, 4), "p_value": round(p_value, DIGITS), "significant": bool(significant),
        "verdict": ("worse" if change > 0 else "better") if significant else "no significant change",
    }
