"""run_grid: failures stay inside their run, skipped tasks, outputs and resume."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from optbench import registry
from optbench.grid import run_grid
from optbench.gridspec import GridBlock, GridSpec

FLAKY_PLUGIN = '''
import torch, optbench
from optbench.errors import OptbenchError

def build_broken(seed=0, device="cpu"):
    w = torch.zeros(1, requires_grad=True)
    def loss(micro):
        if micro == 3:
            raise RuntimeError("boom in step 3")
        return ((w - 1) ** 2).sum()
    return optbench.Problem(params=[w], loss=loss)

def no_data(**params):
    raise OptbenchError("needs-data: no data here; pass --data PATH")

@optbench.hookimpl
def optbench_tasks():
    return [optbench.TaskSpec("broken", build_broken, steps=10),
            optbench.TaskSpec("needs-data", build_broken, {"data": ""}, steps=10, prepare=no_data)]
'''


@pytest.fixture()
def flaky_reg(tmp_path, monkeypatch):
    (tmp_path / "flaky_plugin.py").write_text(FLAKY_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield registry.load(["flaky_plugin"])
    sys.modules.pop("flaky_plugin", None)


def test_a_failing_plugin_ends_only_its_run(tmp_path, flaky_reg):
    spec = GridSpec([GridBlock(tasks=["broken", "pi", "needs-data"], optimizers=["sgd"], steps=10)])
    outcome = run_grid(spec, tmp_path / "out", flaky_reg, progress=False)
    by_task = {s["task"]: s for s in outcome.summaries}
    assert by_task["pi"]["status"] == "ok"
    assert by_task["broken"]["status"] == "failed"
    assert by_task["broken"]["reason"].startswith("RuntimeError: boom in step 3")
    assert by_task["broken"]["steps"] == 3  # the steps before the failure are kept
    assert by_task["needs-data"]["status"] == "skipped"
    assert "pass --data PATH" in by_task["needs-data"]["reason"]
    assert outcome.exit_code == 3
    stored = json.loads((tmp_path / "out" / "runs" / f"{by_task['broken']['run_key']}.json").read_text())
    assert "Traceback" in stored["traceback"] and "boom in step 3" in stored["traceback"]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert sorted(summary["status"]) == ["failed", "ok", "skipped"]


def test_resume_reuses_finished_runs_and_retries_failed(tmp_path, flaky_reg):
    spec = GridSpec([GridBlock(tasks=["broken", "pi"], optimizers=["sgd", "adam"], steps=10)])
    first = run_grid(spec, tmp_path / "out", flaky_reg, progress=False)
    assert first.ran == 4
    again = run_grid(spec, tmp_path / "out", flaky_reg, progress=False)
    assert (again.ran, again.reused) == (2, 2)  # the two failed runs are retried
    kept = run_grid(spec, tmp_path / "out", flaky_reg, progress=False, retry_failed=False)
    assert (kept.ran, kept.reused) == (0, 4)
    dry = run_grid(spec, tmp_path / "out", flaky_reg, dry_run=True, force=True)
    assert len(dry.planned) == 4
    forced = run_grid(spec, tmp_path / "out", flaky_reg, progress=False, force=True)
    assert forced.ran == 4


def test_run_keys_change_with_what_decides_the_result(reg):
    from optbench.gridspec import expand
    from optbench.runner import run_key

    def key(**block):
        return run_key(expand(GridSpec([GridBlock(tasks=["pi"], optimizers=["sgd"], **block)]), reg)[0], reg)

    base = key()
    assert key() == base
    assert key(seeds=[1]) != base
    assert key(hparams={"sgd": {"lr": [0.02]}}) != base
    assert key(steps=10) != base
    assert key(clip=[1.0]) != base
    assert key(grad_modes=["never"]) != base
    assert key(task_params={"pi": {"target": 5.0}}) != base
    # setting a hyper-parameter to its default is the same run
    assert key(hparams={"sgd": {"lr": [0.01]}}) == base
