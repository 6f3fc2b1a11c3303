"""Resume, cache keys, kill -9 and fault isolation, through the CLI.

Plugins under test are written into tmp_path and loaded with ``-p MODULE``.
Processes are really killed (SIGKILL), never simulated: the grid killed
midway runs as a subprocess; grids whose faults all happen inside worker
processes run in this process through ``optbench.cli.main``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest

from optbench import registry
from optbench.cli import main as cli_main

# Timing columns differ between any two runs; everything else must match exactly.
TIMING = {"step_time", "time_per_step", "total_time", "time_to_target", "tokens_per_s", "frac_of_peak",
          "peak_mem_bytes", "threads"}

FAULTY = '''
"""Tasks that misbehave on purpose, one way each, at micro-batch 3."""
import os, signal, time

import torch

import optbench
from optbench import Problem, TaskSpec


def _build(kind):
    def build(seed=0, device="cpu", gib=8.0):
        if kind == "hogs":  # more than --max-memory allows
            torch.ones(int(gib * 2**30 / 4))
        w = torch.zeros(2, requires_grad=True)

        def loss(micro):
            if micro == 3:
                if kind == "raises":
                    raise ValueError("boom at micro-batch 3")
                if kind == "hangs":  # a step that never returns
                    while True:
                        time.sleep(0.05)
                if kind == "crashes":  # what the OOM killer does
                    os.kill(os.getpid(), signal.SIGKILL)
            if kind == "slow":
                time.sleep(0.3)
            base = ((w - 1.0) ** 2).sum()
            return base * (10.0 ** micro) if kind == "explodes" else base
        return Problem(params=[w], loss=loss)
    return build


@optbench.hookimpl
def optbench_tasks():
    return [TaskSpec(f"fault-{k}", _build(k), {"gib": 8.0}, steps=8)
            for k in ("steady", "explodes", "raises", "hangs", "crashes", "hogs", "slow")]
'''


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """The misbehaving plugin as an importable module (name unique per test)."""
    name = f"faulty_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(tmp_path))  # workers inherit sys.path
    return name


def forget_source_hashes() -> None:
    """Hash plugin sources afresh, as a new process would: the hash is memoised
    per process, and a run compared with a subprocess must see the same files."""
    registry._package_hash.__defaults__[0].clear()


def optbench_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "optbench", "grid", "--quiet", *map(str, args)]


def run_files(out: Path) -> dict[str, dict]:
    """Every stored run; each file must parse (atomic writes leave no torn files)."""
    return {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}


def assert_same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        ra, rb = a[key]["records"], b[key]["records"]
        assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}
        sa = {k: v for k, v in a[key]["summary"].items() if k not in TIMING}
        sb = {k: v for k, v in b[key]["summary"].items() if k not in TIMING}
        assert json.dumps(sa, sort_keys=True) == json.dumps(sb, sort_keys=True), key


def assert_same_parquet(a: Path, b: Path) -> None:
    da, db = (pd.read_parquet(p / "runs.parquet") for p in (a, b))
    cols = [c for c in da.columns if c not in TIMING]
    da, db = (d[cols].sort_values(["run_key", "step"]).reset_index(drop=True) for d in (da, db))
    pd.testing.assert_frame_equal(da, db, check_exact=True)


# ---------------------------------------------------------------- cache keys and resume

HELPER_PKG = {
    "__init__.py": '''
import torch
import optbench
from optbench import Problem, TaskSpec
from .helper import target


def build(seed=0, device="cpu"):
    w = torch.zeros(1, requires_grad=True)
    return Problem(params=[w], loss=lambda micro: ((w - target()) ** 2).sum())


@optbench.hookimpl
def optbench_tasks():
    return [TaskSpec("helped", build, {}, steps=5)]
''',
    "helper.py": "def target():\n    return 2.0\n",
}


def test_editing_a_plugin_helper_invalidates_cached_runs(tmp_path, monkeypatch, capsys):
    """benchopt reused stale results after a shared helper changed; our key covers the package."""
    pkg = f"helped_{uuid.uuid4().hex[:8]}"
    (tmp_path / pkg).mkdir()
    for name, text in HELPER_PKG.items():
        (tmp_path / pkg / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    argv = ["grid", "-p", pkg, "--tasks", "helped", "--optimizers", "sgd,adam", "--out", str(out), "--quiet"]
    assert cli_main(argv) == 0
    capsys.readouterr()
    before = set(run_files(out))
    assert len(before) == 2
    assert cli_main(argv + ["--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("0 runs to do, 2 already")

    (tmp_path / pkg / "helper.py").write_text("def target():\n    return 3.0  # changed\n")
    forget_source_hashes()
    assert cli_main(argv + ["--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("2 runs to do, 0 already")
    new_keys = {line.split()[0] for line in listed.splitlines()[1:]}
    assert len(new_keys) == 2 and not new_keys & before


def test_dry_run_lists_missing_rerun_reuses_force_reruns(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["grid", "--tasks", "pi", "--optimizers", "sgd,adam", "--steps", "20", "--out", str(out)]
    assert cli_main(base + ["--seeds", "0,1", "--quiet"]) == 0
    first = run_files(out)
    capsys.readouterr()

    assert cli_main(base + ["--seeds", "0,1,2", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"2 runs to do, 4 already in {out}"
    assert all("seed=2" in line for line in lines[1:]) and len(lines) == 3
    assert {line.split()[0] for line in lines[1:]}.isdisjoint(first)

    assert cli_main(base + ["--seeds", "0,1", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("4 runs (0 ran, 4 reused)")
    assert run_files(out) == first  # untouched, not rewritten

    assert cli_main(base + ["--seeds", "0,1", "--quiet", "--force"]) == 0
    assert capsys.readouterr().out.startswith("4 runs (4 ran, 0 reused)")
    assert_same_results(run_files(out), first)


def test_failed_runs_are_retried_unless_kept(tmp_path, faulty, capsys):
    out = tmp_path / "out"
    argv = ["grid", "-p", faulty, "--tasks", "fault-steady,fault-raises", "--optimizers", "sgd",
            "--out", str(out), "--quiet"]
    assert cli_main(argv) == 3
    assert capsys.readouterr().out.startswith("2 runs (2 ran, 0 reused)")
    assert cli_main(argv) == 3
    assert capsys.readouterr().out.startswith("2 runs (1 ran, 1 reused)")
    assert cli_main(argv + ["--keep-failed"]) == 3
    assert capsys.readouterr().out.startswith("2 runs (0 ran, 2 reused)")


# ---------------------------------------------------------------- kill -9

KILL_GRID = ["--tasks", "pi,l2-bowl", "--optimizers", "sgd,adam,momentum", "--set", "lr=0.001,0.01",
             "--seeds", "0,1", "--steps", "600"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same grid, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference")
    forget_source_hashes()
    assert cli_main(["grid", *KILL_GRID, "--out", str(out), "--quiet"]) == 0
    assert len(run_files(out)) == 24
    return out


def kill_midway(cmd: list[str], out: Path, at_least: int, whole_group: bool) -> int:
    """Start ``cmd``, SIGKILL it once ``at_least`` runs are on disk; return how many were."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "runs").glob("*.json"))) < at_least:
            assert proc.poll() is None, f"grid ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no runs were written in 2 minutes"
            time.sleep(0.01)
        workers = psutil.Process(proc.pid).children(recursive=True)
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # only the grid process: its workers must not outlive it
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived the killed grid: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return len(run_files(out))  # also checks that every file on disk parses


@pytest.mark.parametrize("jobs, whole_group", [(1, True), (2, False)], ids=["serial", "jobs2"])
def test_kill_9_then_resume_gives_the_uninterrupted_results(tmp_path, reference, capsys, jobs, whole_group):
    out = tmp_path / "killed"
    args = [*KILL_GRID, "--out", str(out), "--jobs", str(jobs)]
    kept = kill_midway(optbench_cmd(*args), out, at_least=4, whole_group=whole_group)
    assert 4 <= kept < 24, "the kill must land mid-grid for this test to mean anything"

    forget_source_hashes()
    assert cli_main(["grid", *args, "--quiet"]) == 0  # the resume, in this process
    assert capsys.readouterr().out.startswith(f"24 runs ({24 - kept} ran, {kept} reused)")
    assert_same_results(run_files(out), run_files(reference))
    assert_same_parquet(out, reference)
    # What a kill can leave behind is a temporary file, never a torn run file.
    assert all(p.name.startswith(".") for p in (out / "runs").iterdir() if p.suffix != ".json")


# ---------------------------------------------------------------- fault isolation

def by_task(out: Path) -> dict[str, dict]:
    """One summary per task, after checking that its runs (one per seed) ended alike."""
    found: dict[str, list] = {}
    for r in run_files(out).values():
        found.setdefault(r["summary"]["task"], []).append(r["summary"])
    for runs in found.values():
        assert len({s["status"] for s in runs}) == 1, runs
    return {task: runs[0] for task, runs in found.items()}


def test_faults_stay_in_their_run_with_workers(tmp_path, faulty, capsys):
    """Diverge, raise, hang past --timeout, die to SIGKILL, exceed --max-memory: the grid goes on.
    (In this process: every fault happens in a worker.)"""
    out = tmp_path / "out"
    tasks = "fault-steady,fault-explodes,fault-raises,fault-hangs,fault-crashes,fault-hogs"
    code = cli_main(["grid", "-p", faulty, "--tasks", tasks, "--optimizers", "sgd", "--seeds", "0,1",
                     "--timeout", "1", "--jobs", "2", "--max-memory", "3", "--out", str(out), "--quiet"])
    done = capsys.readouterr()
    assert code == 3, done.err
    assert done.out.startswith("12 runs (12 ran, 0 reused): 2 ok, 2 diverged, 6 failed, 2 timeout")
    s = by_task(out)
    assert s["fault-steady"]["status"] == "ok" and s["fault-steady"]["steps"] == 8
    assert s["fault-explodes"]["status"] == "diverged"
    assert s["fault-raises"]["status"] == "failed"
    assert s["fault-raises"]["reason"].startswith("ValueError: boom at micro-batch 3")
    assert s["fault-hangs"]["status"] == "timeout"
    assert "--timeout 1 s" in s["fault-hangs"]["reason"] and "killed" in s["fault-hangs"]["reason"]
    assert s["fault-crashes"]["status"] == "failed"
    assert s["fault-crashes"]["reason"] == "worker process died (signal 9 SIGKILL, out of memory?)"
    assert s["fault-hogs"]["status"] == "failed"
    assert "allocate" in s["fault-hogs"]["reason"]
    # The summary on stderr names every run that did not finish.
    for task in ("fault-raises", "fault-hangs", "fault-crashes", "fault-hogs"):
        assert f": {task} sgd" in done.err


def test_faults_in_process(tmp_path, faulty, capsys):
    """Serial mode handles what can be handled in-process: divergence, exceptions
    and a slow run's in-loop timeout (a step that never returns needs --jobs)."""
    out = tmp_path / "out"
    argv = ["grid", "-p", faulty, "--tasks", "fault-steady,fault-explodes,fault-raises,fault-slow",
            "--optimizers", "sgd", "--timeout", "0.5", "--out", str(out), "--quiet"]
    assert cli_main(argv) == 3
    assert capsys.readouterr().out.startswith("4 runs (4 ran, 0 reused): 1 ok, 1 diverged, 1 failed, 1 timeout")
    s = by_task(out)
    assert s["fault-explodes"]["status"] == "diverged" and "limit" in s["fault-explodes"]["reason"]
    assert s["fault-raises"]["reason"].startswith("ValueError: boom")
    assert run_files(out)[s["fault-raises"]["run_key"]]["traceback"].startswith("Traceback")
    slow = s["fault-slow"]
    assert slow["status"] == "timeout" and 1 <= slow["steps"] < 8  # the curve up to the deadline is kept
