"""The model-5 tasks inside the harness: a real grid on the tiny size, and the
offline skip that leaves the rest of a grid running."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pandas as pd

from optbench.grid import run_grid
from optbench.gridspec import GridBlock, GridSpec

TASK = "fineweb-model5"
STEPS = 30


def test_two_optimizer_grid_lowers_held_out_loss(reg, corpus, cache, tmp_path):
    params = {"size": "tiny", "data": str(corpus)}
    spec = GridSpec([GridBlock(tasks=[TASK], optimizers=["sgd", "adamw"], steps=STEPS, seeds=[0],
                               hparams={"sgd": {"lr": [0.5]}, "adamw": {"lr": [3e-3]}},
                               task_params={TASK: params})])
    outcome = run_grid(spec, tmp_path / "out", reg, progress=False)
    assert [s["status"] for s in outcome.summaries] == ["ok", "ok"], outcome.summaries

    # the held-out loss of the untrained model: runs are seeded, so this is their step-0 model
    tspec = reg.tasks[TASK]
    problem = tspec.build(seed=0, device="cpu", **{**tspec.defaults, **params})
    problem.modules[0].eval()
    start = problem.evaluate()["val_loss"]
    assert abs(start - math.log(50257)) < 0.5

    records = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    by_run = {s["run_key"]: s["optimizer"] for s in outcome.summaries}
    for key, curve in records.groupby("run_key"):
        evals = curve.dropna(subset=["val_loss"])
        # measured every eval_every steps and after the last one
        assert list(evals["step"]) == [24, 29]
        final = evals["val_loss"].iloc[-1]
        assert final < start - 0.5, (by_run[key], start, list(evals["val_loss"]))
        assert curve["loss"].iloc[-5:].mean() < curve["loss"].iloc[:5].mean()
    for s in outcome.summaries:
        assert s["tokens_per_s"] > 0 and s["frac_of_peak"] > 0
        assert s["final_target_metric"] == s["final_target_metric"]  # val_loss recorded, not NaN


def test_offline_model5_is_skipped_and_the_rest_of_the_grid_runs(cache, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPTBENCH_CACHE": str(cache)}
    env.pop("OPTBENCH_FINEWEB", None)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "optbench", "grid", "--tasks", f"{TASK},pi", "--optimizers", "sgd",
         "--steps", "5", "--set", f"{TASK}.size=tiny", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    skips = [line for line in proc.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skips) == 1 and "--data" in skips[0] and "OPTBENCH_FINEWEB" in skips[0]
    summary = pd.read_csv(out / "summary.csv").set_index("task")
    assert summary.loc[TASK, "status"] == "skipped"
    assert "FineWeb is not reachable" in summary.loc[TASK, "reason"]
    assert summary.loc["pi", "status"] == "ok"
