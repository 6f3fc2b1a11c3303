"""The local worker-process executor (``--jobs N``): same results as serial,
threads per worker, batching, and losing a worker without losing the grid."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from optbench import executors, registry
from optbench.errors import OptbenchError
from optbench.executors.processes import ProcessExecutor, cores
from optbench.grid import run_grid
from optbench.gridspec import GridBlock, GridSpec, expand
from optbench.runner import run_key

#: A task that draws from torch's global random state in build and in every
#: step, so that curves match only if every worker seeds each run as serial does.
NOISY = '''
import torch
import optbench
from optbench import Problem, TaskSpec


def build(seed=0, device="cpu"):
    w = torch.randn(4, requires_grad=True)
    true = torch.arange(4.0)

    def loss(micro):
        x = torch.randn(16, 4)
        return ((x @ w - x @ true) ** 2).mean()
    return Problem(params=[w], loss=loss)


@optbench.hookimpl
def optbench_tasks():
    return [TaskSpec("noisy-regression", build, {}, steps=30)]
'''

#: every axis that changes the training loop, so "identical" covers them all
VARIED = GridSpec([GridBlock(tasks=["pi", "l2-bowl", "noisy-regression"], optimizers=["sgd", "adam"],
                             schedulers=["constant", "cosine"], grad_modes=["zero", "never", "accum2"],
                             clip=[0.0, 1.0], seeds=[0, 1], steps=30, hparams={"*": {"lr": [0.05]}})],
                  name="varied")
N_VARIED = 3 * 2 * 2 * 3 * 2 * 2


@pytest.fixture(scope="module")
def noisy_reg(tmp_path_factory):
    """The registry with the noisy task, importable by workers through sys.path."""
    folder = tmp_path_factory.mktemp("plugin")
    name = f"noisy_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(NOISY)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield registry.load([name])




@pytest.fixture(scope="module")
def serial_varied(tmp_path_factory, noisy_reg, comparable):
    out = tmp_path_factory.mktemp("serial")
    outcome = run_grid(VARIED, out, noisy_reg, progress=False)
    assert len(outcome.summaries) == N_VARIED and outcome.count("ok") > N_VARIED // 2
    return comparable(out)


def test_workers_reproduce_serial_curves_exactly(tmp_path, serial_varied, noisy_reg, comparable):
    outcome = run_grid(VARIED, tmp_path, noisy_reg, jobs=2, progress=False)
    assert outcome.ran == N_VARIED
    steps, runs = comparable(tmp_path)
    pd.testing.assert_frame_equal(steps, serial_varied[0], check_exact=True)
    assert runs == serial_varied[1]
    # workers x threads = cores, recorded with each run
    threads = {json.loads(p.read_text())["summary"]["threads"] for p in (tmp_path / "runs").glob("*.json")}
    assert threads == {max(1, cores() // 2)}


def test_fixed_batches_and_explicit_threads(tmp_path, serial_varied, noisy_reg, comparable):
    spec = GridSpec(VARIED.blocks, threads=1, name="varied")
    run_grid(spec, tmp_path, noisy_reg, executor="processes", jobs=1, executor_options={"chunk": 7},
             progress=False)
    steps, runs = comparable(tmp_path)
    pd.testing.assert_frame_equal(steps, serial_varied[0], check_exact=True)
    assert runs == serial_varied[1]
    assert {json.loads(p.read_text())["summary"]["threads"] for p in (tmp_path / "runs").glob("*.json")} == {1}


CRASHY = '''
import os, signal, time
import torch
import optbench
from optbench import Problem, TaskSpec


def _build(kind):
    def build(seed=0, device="cpu"):
        w = torch.zeros(1, requires_grad=True)

        def loss(micro):
            if micro == 2 and kind == "crashes":
                os.kill(os.getpid(), signal.SIGKILL)
            if micro == 2 and kind == "hangs":
                while True:
                    time.sleep(0.05)
            return ((w - 1.0) ** 2).sum()
        return Problem(params=[w], loss=loss)
    return build


@optbench.hookimpl
def optbench_tasks():
    return [TaskSpec(k, _build(k), {}, steps=5) for k in ("crashes", "hangs", "fine")]
'''


def test_runs_queued_behind_a_lost_worker_still_run(tmp_path, monkeypatch):
    """One worker, one batch of six: a run that kills the worker and one that hangs
    lose only themselves; the runs queued behind them go to the replacement."""
    name = f"crashy_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = registry.load([name])
    spec = GridSpec([GridBlock(tasks=["fine", "crashes", "hangs"], optimizers=["sgd"],
                               seeds=[0])], timeout=0.5)
    items = [(rc, run_key(rc, reg)) for rc in expand(spec, reg)]
    assert [rc.task for rc, _ in items] == ["fine", "crashes", "hangs"]
    items += [(rc, run_key(rc, reg)) for rc in expand(GridSpec([GridBlock(tasks=["fine"], optimizers=["sgd"],
                                                                          seeds=[1, 2, 3])]), reg)]
    ex = ProcessExecutor(1, chunk=6)
    try:
        got = {r["summary"]["run_key"]: r["summary"] for r in ex.run(items, reg)}
    finally:
        ex.close()
    assert len(got) == 6
    by_task = {}
    for s in got.values():
        by_task.setdefault(s["task"], []).append(s)
    assert [s["status"] for s in by_task["fine"]] == ["ok"] * 4
    assert by_task["crashes"][0]["status"] == "failed"
    assert by_task["crashes"][0]["reason"] == "worker process died (signal 9 SIGKILL, out of memory?)"
    assert by_task["hangs"][0]["status"] == "timeout"
    assert "after it started (--timeout 0.5 s); its worker was killed" in by_task["hangs"][0]["reason"]
    assert not ex._workers


def test_a_worker_that_cannot_start_stops_the_grid_with_the_reason(tmp_path, noisy_reg):
    with pytest.raises(OptbenchError, match="could not start: MemoryError: --max-memory 0.1 GiB leaves no room"):
        run_grid(VARIED, tmp_path, noisy_reg, jobs=2, executor_options={"max_memory": 0.1}, progress=False)


def test_executor_choice():
    assert type(executors.get(None, 1)).__name__ == "SerialExecutor"
    assert type(executors.get(None, 2)).__name__ == "ProcessExecutor"
    assert type(executors.get(None, 1, max_memory=4)).__name__ == "ProcessExecutor"
    with pytest.raises(OptbenchError, match="serial runs one run at a time"):
        executors.get("serial", 2)
    with pytest.raises(OptbenchError, match="--scheduler is for the dask executor"):
        executors.get("processes", 2, scheduler_address="tcp://127.0.0.1:1")
    with pytest.raises(OptbenchError, match="unknown executor 'threads'"):
        executors.get("threads", 2)


def test_cli_rejects_contradictory_flags(tmp_path, capsys):
    from optbench.cli import main

    assert main(["grid", "--preset", "smoke", "--executor", "serial", "--jobs", "2", "--out", str(tmp_path)]) == 2
    assert "--executor serial runs one run at a time" in capsys.readouterr().err
    assert main(["grid", "--preset", "smoke", "--max-memory", "4", "--executor", "serial",
                 "--out", str(tmp_path)]) == 2
    assert "--max-memory caps worker processes" in capsys.readouterr().err
