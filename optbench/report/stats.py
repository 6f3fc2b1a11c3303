"""Small statistics shared by the report and the leaderboard.

Kept free of scipy (not a dependency): the only distribution needed is the
two-sided 95 % quantile of Student's t, which a table plus a Cornish-Fisher
expansion gives to four decimals for every degree of freedom.
"""

from __future__ import annotations

import math

# t_{0.975, df} for df = 1..30; beyond that the expansion below is within 2e-5.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
_Z975 = 1.959964


def t975(df: float) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (NaN if df < 1)."""
    if not df >= 1:
        return math.nan
    df = int(df)
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def ci95_halfwidth(values) -> float:
    """Half-width of the t-based 95 % confidence interval of the mean of ``values``.

    Non-finite values are ignored; fewer than two finite values give NaN
    because one seed says nothing about the spread.
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return math.nan
    return t975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)


def ci95_bounds(values) -> tuple[float, float]:
    """(low, high) of the 95 % CI of the mean; seaborn takes this as an ``errorbar`` callable."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    m, h = float(x.mean()), ci95_halfwidth(x)
    h = 0.0 if math.isnan(h) else h
    return (m - h, m + h)
