"""The Dask executor on real clusters: an existing one reached by address
(``--scheduler``) and the LocalCluster that ``--executor dask`` starts."""

from __future__ import annotations

import logging
import uuid

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from optbench import registry  # noqa: E402
from optbench.errors import OptbenchError  # noqa: E402
from optbench.executors.processes import cores  # noqa: E402
from optbench.grid import run_grid  # noqa: E402
from optbench.gridspec import GridBlock, GridSpec  # noqa: E402

GRID = GridSpec([GridBlock(tasks=["pi", "l2-bowl"], optimizers=["sgd", "adam"], grad_modes=["zero", "accum2"],
                           clip=[0.0, 1.0], seeds=[0], steps=40, hparams={"*": {"lr": [0.05]}})], name="dask")


#: draws from torch's global random state in build and every step (see test_processes.py)
NOISY = """
import torch
import optbench
from optbench import Problem, TaskSpec


def build(seed=0, device="cpu"):
    w = torch.randn(4, requires_grad=True)

    def loss(micro):
        x = torch.randn(16, 4)
        return ((x @ w - x @ torch.arange(4.0)) ** 2).mean()
    return Problem(params=[w], loss=loss)


@optbench.hookimpl
def optbench_tasks():
    return [TaskSpec("noisy-regression", build, {}, steps=30)]
"""




@pytest.fixture(scope="module")
def serial(tmp_path_factory, comparable):
    out = tmp_path_factory.mktemp("serial")
    assert len(run_grid(GRID, out, progress=False).summaries) == 16
    return comparable(out)


@pytest.fixture(scope="module")
def cluster():
    """An already running cluster; threads in this process keep it quick to start."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as c:
        yield c


def test_existing_cluster_reproduces_serial_curves(tmp_path, serial, cluster, comparable):
    # The toy tasks draw no random numbers, so workers sharing this process is
    # harmless here; for other tasks it is not, and optbench says so.
    with pytest.warns(UserWarning, match=r"workers share a process\); seeding is per process"):
        outcome = run_grid(GRID, tmp_path, executor="dask", progress=False,
                           executor_options={"scheduler_address": cluster.scheduler_address, "chunk": 3})
    assert outcome.ran == 16 and outcome.exit_code == 0
    steps, runs = comparable(tmp_path)
    pd.testing.assert_frame_equal(steps, serial[0], check_exact=True)
    assert runs == serial[1]


def test_a_plugin_missing_on_the_workers_fails_only_its_runs(tmp_path, monkeypatch, cluster):
    """Workers rebuild the registry from the plugin arguments; a task they cannot
    load fails with a reason that says so, and its batch-mates still run."""
    name = f"local_only_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import optbench, torch\n"
        "from optbench import Problem, TaskSpec\n"
        "def build(seed=0, device='cpu'):\n"
        "    w = torch.zeros(1, requires_grad=True)\n"
        "    return Problem(params=[w], loss=lambda micro: (w - 1).pow(2).sum())\n"
        "@optbench.hookimpl\n"
        "def optbench_tasks():\n"
        "    return [TaskSpec('local-only', build, {}, steps=5)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = registry.load([name])
    reg.load_args = ((), (), True)  # what a worker without the plugin would build
    spec = GridSpec([GridBlock(tasks=["pi", "local-only"], optimizers=["sgd"], seeds=[0, 1], steps=5)])
    with pytest.warns(UserWarning, match="workers share a process"):
        outcome = run_grid(spec, tmp_path / "out", reg, executor="dask", progress=False,
                           executor_options={"scheduler_address": cluster.scheduler_address, "chunk": 4})
    status = {(s["task"], s["seed"]): (s["status"], s["reason"]) for s in outcome.summaries}
    assert status[("pi", 0)] == status[("pi", 1)] == ("ok", "")
    assert status[("local-only", 0)][0] == "failed"
    assert status[("local-only", 0)][1].startswith("task 'local-only' not installed on the worker's machine")
    assert outcome.exit_code == 3


def test_local_cluster_of_worker_processes(tmp_path, monkeypatch, comparable):
    """``--executor dask --jobs 2`` without --scheduler: a LocalCluster of two
    single-threaded worker processes, each with cores // 2 torch threads, that
    seed every run as the serial executor does."""
    name = f"noisy_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(NOISY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # dask's workers are spawned processes
    reg = registry.load([name])
    spec = GridSpec([GridBlock(tasks=["pi", "noisy-regression"], optimizers=["sgd", "adam"], seeds=[0, 1],
                               steps=30, hparams={"*": {"lr": [0.05]}})])
    assert len(run_grid(spec, tmp_path / "serial", reg, progress=False).summaries) == 8
    outcome = run_grid(spec, tmp_path / "dask", reg, executor="dask", jobs=2, progress=False)
    assert outcome.ran == 8
    steps, runs = comparable(tmp_path / "dask")
    serial = comparable(tmp_path / "serial")
    pd.testing.assert_frame_equal(steps, serial[0], check_exact=True)
    assert runs == serial[1]
    assert {s["threads"] for s in outcome.summaries} == {max(1, cores() // 2)}


def test_unreachable_scheduler_is_one_clear_error(tmp_path):
    with pytest.raises(OptbenchError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_grid(GRID, tmp_path, executor="dask", progress=False,
                 executor_options={"scheduler_address": "tcp://127.0.0.1:9", "connect_timeout": 1})


CRASHES = """
import os, signal
import torch
import optbench
from optbench import Problem, TaskSpec


def build(seed=0, device="cpu"):
    w = torch.zeros(1, requires_grad=True)

    def loss(micro):
        if micro == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
        return (w - 1).pow(2).sum()
    return Problem(params=[w], loss=loss)


@optbench.hookimpl
def optbench_tasks():
    return [TaskSpec("crashes", build, {}, steps=5)]
"""


@pytest.mark.slow
def test_a_run_that_kills_its_worker_fails_alone(tmp_path, monkeypatch):
    """Dask gives up on a task whose worker died (KilledWorker); the batch it was
    in is retried run by run, so only the culprit is recorded as failed."""
    import dask

    name = f"crashes_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CRASHES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    reg = registry.load([name])
    spec = GridSpec([GridBlock(tasks=["pi"], optimizers=["sgd"], seeds=[0, 1, 2], steps=5),
                     GridBlock(tasks=["crashes"], optimizers=["sgd"], seeds=[0], steps=5)])
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # give up at the first death
        outcome = run_grid(spec, tmp_path / "out", reg, executor="dask", jobs=2, progress=False,
                           executor_options={"chunk": 4})  # one batch holds them all
    status = {(s["task"], s["seed"]): s for s in outcome.summaries}
    assert [status[("pi", seed)]["status"] for seed in (0, 1, 2)] == ["ok"] * 3
    assert status[("crashes", 0)]["status"] == "failed"
    assert "KilledWorker" in status[("crashes", 0)]["reason"]
