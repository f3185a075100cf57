"""Uncertainty of the reports' rates: Wilson score intervals, and Newcombe's
interval for the difference of two rates. Pure functions over counts.

docs/analytics.md gives the same formulas as SQL to copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of k successes in n trials; (None, None) for n = 0.

    Unlike p ± z·sqrt(p(1-p)/n) it stays within [0, 1] and is not empty at
    k = 0 or k = n, which is where small groups sit.
    """
    if n <= 0:
        return None, None
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """b - a with its 95% interval (Newcombe's method 10, from the two Wilson intervals)."""

    value: float | None
    low: float | None
    high: float | None

    @property
    def verdict(self) -> str:
        """'up' or 'down' when the interval excludes 0, else 'within uncertainty'."""
        if self.low is None or self.high is None:
            return "no data"
        if self.low > 0:
            return "up"
        if self.high < 0:
            return "down"
        return "within uncertainty"


def difference(k_a: int, n_a: int, k_b: int, n_b: int) -> Difference:
    """How far rate b (k_b/n_b) is from rate a, and whether that exceeds the noise."""
    low_a, high_a = wilson(k_a, n_a)
    low_b, high_b = wilson(k_b, n_b)
    if low_a is None or high_a is None or low_b is None or high_b is None:
        return Difference(None, None, None)
    p_a, p_b = k_a / n_a, k_b / n_b
    d = p_b - p_a
    low = d - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    high = d + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    return Difference(d, low, high)
