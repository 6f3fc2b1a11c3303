"""Convergence and speed tables: mean and 95 % confidence interval over seeds.

The interval is Student's t (``scipy.stats.t``) on the per-seed values, so
three seeds give an honest, wide interval rather than a normal-theory one.
``steps_to_target`` is averaged over the seeds that reached the target; the
``reached`` column says how many did.
"""

from __future__ import annotations

import math

from optbench.schema import AXES, CONVERGENCE_METRICS, SPEED_METRICS

GROUP = [a for a in AXES if a != "seed"]


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t interval, n) of the finite values."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan, 1
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n), n


def aggregate(summary, metrics) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    rows = []
    for keys, g in summary.groupby(GROUP, sort=True, dropna=False):
        row = dict(zip(GROUP, keys))
        row["n_seeds"] = len(g)
        row["n_ok"] = int((g["status"] == "ok").sum())
        row["divergence_rate"] = float((g["status"] == "diverged").mean())
        row["failed"] = int(g["status"].isin(["failed", "timeout"]).sum())
        ok = g[g["status"] == "ok"]
        for m in metrics:
            mean, ci, n = mean_ci(ok[m]) if m in ok else (math.nan, math.nan, 0)
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, ci
            if m == "steps_to_target":
                row["reached"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def convergence_table(summary):
    return aggregate(summary, CONVERGENCE_METRICS)


def speed_table(summary):
    return aggregate(summary, SPEED_METRICS)
