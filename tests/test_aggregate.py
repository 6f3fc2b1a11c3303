"""Mean and Student-t 95 % intervals over seeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from optbench.aggregate import convergence_table, mean_ci


def test_mean_ci_uses_student_t():
    mean, ci, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert ci == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_mean_ci_ignores_non_finite_and_handles_one_value():
    assert mean_ci([1.0, float("nan"), float("inf")])[2] == 1
    assert math.isnan(mean_ci([5.0])[1])
    assert math.isnan(mean_ci([])[0])


def test_convergence_table_groups_over_seeds_and_counts_divergence():
    rows = []
    for seed, (status, loss) in enumerate([("ok", 1.0), ("ok", 3.0), ("diverged", float("nan"))]):
        rows.append(dict(task="pi", optimizer="sgd", hparams='{"lr":0.1}', scheduler="constant", grad_mode="zero",
                         clip=0.0, seed=seed, status=status, final_loss=loss, best_loss=loss,
                         final_target_metric=loss, steps_to_target=10 + seed, time_to_target=0.1,
                         oscillations=0))
    t = convergence_table(pd.DataFrame(rows))
    assert len(t) == 1
    row = t.iloc[0]
    assert row["n_seeds"] == 3 and row["n_ok"] == 2
    assert row["divergence_rate"] == pytest.approx(1 / 3)
    assert row["final_loss_mean"] == 2.0  # diverged seeds are counted in the rate, not the mean
    assert row["reached"] == 2
