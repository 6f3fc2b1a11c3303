"""What every executor must reproduce: a results folder's curves and summaries, timing aside."""

from __future__ import annotations

import json

import pandas as pd
import pytest

#: columns that measure the machine, not the optimization: they differ between any two runs
TIMING = {"step_time", "time_per_step", "total_time", "time_to_target", "tokens_per_s", "frac_of_peak",
          "peak_mem_bytes", "threads"}


def _comparable(out) -> tuple[pd.DataFrame, str]:
    steps = pd.read_parquet(out / "runs.parquet")
    steps = steps[[c for c in steps.columns if c not in TIMING]].sort_values(["run_key", "step"])
    runs = {}
    for p in (out / "runs").glob("*.json"):
        r = json.loads(p.read_text())
        runs[p.stem] = ({k: v for k, v in r["records"].items() if k not in TIMING},
                        {k: v for k, v in r["summary"].items() if k not in TIMING})
    # as canonical JSON: NaN metrics compare equal there, unlike in dicts
    return steps.reset_index(drop=True), json.dumps(runs, sort_keys=True)


@pytest.fixture(scope="session")
def comparable():
    """``comparable(results_dir) -> (per-step table, JSON of {run_key: (records, summary)})``, timing left out."""
    return _comparable
