"""Convergence and speed tables: mean and 95 % confidence interval over seeds.

The interval is Student's t on the per-seed values, so three seeds give an
honest, wide interval rather than a normal-theory one.  ``steps_to_target``
is averaged over the seeds that reached the target; the ``reached`` column
says how many did.

Plain Python on lists of dicts (:func:`aggregate_records`), so that writing a
grid's tables needs neither pandas nor scipy (~1.5 s of imports at start-up);
:func:`convergence_table` and :func:`speed_table` wrap it for DataFrames.
"""

from __future__ import annotations

import math

from optbench.schema import AXES, CONVERGENCE_METRICS, SPEED_METRICS

GROUP = [a for a in AXES if a != "seed"]


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer ``df`` degrees of freedom (exact closed form).

    Abramowitz & Stegun 26.7.3-4: with theta = atan(t / sqrt(df)), the
    probability of |T| < t is a finite sum of powers of cos(theta).
    """
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2:  # odd
        a = 0.0
        if df > 1:
            term = total = c
            for k in range(3, df - 1, 2):
                term *= c2 * (k - 1) / k
                total += term
            a = s * total
        inside = 2.0 / math.pi * (theta + a)
    else:
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
        inside = s * total
    return 0.5 + 0.5 * inside


def t_ppf(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (bisection on the exact CDF, to 1 ulp).

    Agrees with ``scipy.stats.t.ppf`` to ~1e-13 relative; the harness only needs
    ``t_ppf(0.975, n - 1)`` and importing scipy.stats for it costs ~0.9 s.
    """
    if not 0.0 < p < 1.0 or df < 1 or int(df) != df:
        raise ValueError(f"t_ppf needs 0 < p < 1 and a positive integer df, got p={p}, df={df}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, int(df)) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_cdf(mid, int(df)) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


_T975: dict[int, float] = {}


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t interval, n) of the finite values."""
    xs = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            xs.append(v)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan, 1
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    if n - 1 not in _T975:
        _T975[n - 1] = t_ppf(0.975, n - 1)
    return mean, _T975[n - 1] * sd / math.sqrt(n), n


def _key(v):
    # sort like pandas' groupby(sort=True, dropna=False): by value, missing (None/NaN) last
    missing = v is None or (isinstance(v, float) and v != v)
    return (missing, "" if missing else v)


def aggregate_records(records: list[dict], metrics) -> list[dict]:
    """One row per setting (every axis but the seed): counts, and mean/ci95 of ``metrics`` over ok seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(a) for a in GROUP), []).append(r)
    rows = []
    for keys in sorted(groups, key=lambda ks: tuple(_key(k) for k in ks)):
        g = groups[keys]
        row = dict(zip(GROUP, keys))
        statuses = [r.get("status") for r in g]
        row["n_seeds"] = len(g)
        row["n_ok"] = statuses.count("ok")
        row["divergence_rate"] = statuses.count("diverged") / len(g)
        row["failed"] = statuses.count("failed") + statuses.count("timeout")
        ok = [r for r in g if r.get("status") == "ok"]
        for m in metrics:
            mean, ci, n = mean_ci(r.get(m) for r in ok)
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, ci
            if m == "steps_to_target":
                row["reached"] = n
        rows.append(row)
    return rows


def aggregate(summary, metrics) -> "pd.DataFrame":  # noqa: F821
    """:func:`aggregate_records` on a summary DataFrame, as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(aggregate_records(summary.to_dict("records"), metrics))


def convergence_table(summary):
    return aggregate(summary, CONVERGENCE_METRICS)


def speed_table(summary):
    return aggregate(summary, SPEED_METRICS)
