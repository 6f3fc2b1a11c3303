"""What optbench adds to a bare, hand-written loop doing the same work (issues 2 and 7).

Pairs of benchmarks in one group each, so pytest-benchmark's table shows them
side by side (compare the medians):

``pi-150-steps``       one grid run (``run_one``) of the pi task vs the bare loop
``model5-cpu-steps``   ``run_one`` of the model-5 CPU preset vs nanoGPT's loop on
                       the same model and batches (build and final evaluation
                       included on both sides; skipped without the task or
                       tiktoken's files)
``grid-54-runs``       the whole ``optbench grid`` process of issue 2 (54 toy runs)
                       vs a bare script doing the same 54 runs, and ``import torch``

``benchmarks/harness_ratio.py`` prints the ratios (per step, per run, start-up)
directly.  With ``--benchmark-disable`` every body runs once on a reduced
size, as a quick smoke test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bench_common as bc
from optbench import registry
from optbench.runner import run_key, run_one

REG = registry.load()
HERE = Path(__file__).resolve().parent


def _disabled(benchmark) -> bool:
    return bool(getattr(benchmark, "disabled", False))


@pytest.mark.parametrize("side", ["bare", "harness"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pi_run(benchmark, side, optimizer):
    benchmark.group = f"pi-150-steps-{optimizer}"
    if side == "harness":
        rc = bc.toy_config(REG, "pi", optimizer, 150)
        key = run_key(rc, REG)
        result = benchmark(run_one, rc, REG, key)
        assert result["summary"]["status"] == "ok"
    else:
        losses = benchmark(bc.bare_run, "pi", optimizer, bc.LR, 0, 150)
        assert len(losses) == 150


@pytest.fixture(scope="module")
def model5_params(tmp_path_factory):
    import os

    old = os.environ.get("OPTBENCH_CACHE")
    try:
        yield bc.model5_setup(tmp_path_factory.mktemp("model5"))
    except bc.Model5Unavailable as exc:
        pytest.skip(f"model-5 comparison skipped: {exc}")
    finally:
        if old is None:
            os.environ.pop("OPTBENCH_CACHE", None)
        else:
            os.environ["OPTBENCH_CACHE"] = old


@pytest.mark.parametrize("side", ["bare", "harness"])
def test_model5_run(benchmark, side, model5_params):
    from optbench.malloc import tune_malloc

    tune_malloc()  # the same allocator settings for both sides
    small = _disabled(benchmark)
    params = {**model5_params, "size": "tiny"} if small else model5_params
    steps = 2 if small else 10
    benchmark.group = "model5-cpu-10-steps"
    benchmark.extra_info.update(steps=steps, size=params["size"])
    if side == "harness":
        rc = bc.model5_config(REG, params, steps)
        if small:  # smoke test: skip the one-off matmul-peak measurement of frac_of_peak
            import torch

            from optbench import runner

            runner._PEAKS.setdefault(("cpu", torch.get_num_threads()), float("nan"))
        run_one(rc, REG)  # warm-up; it also measures the matmul peak once, for frac_of_peak
        result = benchmark.pedantic(run_one, args=(rc, REG), rounds=3, iterations=1)
        assert result["summary"]["status"] == "ok", result["summary"]["reason"]
    else:
        bc.bare_model5_run(REG, params, 1)
        benchmark.pedantic(bc.bare_model5_run, args=(REG, params, steps), rounds=3, iterations=1)


GRID54 = ["--tasks", "pi,l2-bowl", "--optimizers", "sgd,adam,adamw", "--set", "lr=0.001,0.01,0.1",
          "--seeds", "0,1,2"]


@pytest.mark.parametrize("what", ["import-torch", "bare-script", "optbench-grid"])
def test_grid54_process(benchmark, what, tmp_path):
    small = _disabled(benchmark)
    benchmark.group = "grid-54-runs-process"
    counter = iter(range(10**6))
    if what == "import-torch":
        cmd = lambda: [sys.executable, "-c", "import torch"]  # noqa: E731
    elif what == "bare-script":
        script = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_common as bc\n"
                  f"for t in ('pi', 'l2-bowl'):\n for o in ('sgd', 'adam', 'adamw'):\n"
                  f"  for lr in (0.001, 0.01, 0.1):\n   for s in (0, 1, 2):\n"
                  f"    bc.bare_run(t, o, lr, s, {5 if small else 150})\n")
        cmd = lambda: [sys.executable, "-c", script]  # noqa: E731
    else:
        extra = ["--steps", "5"] if small else []
        cmd = lambda: [sys.executable, "-m", "optbench", "grid", *GRID54, *extra,  # noqa: E731
                       "--out", str(tmp_path / f"g{next(counter)}")]

    def run():
        subprocess.run(cmd(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    benchmark.pedantic(run, rounds=1 if small else 3, iterations=1, warmup_rounds=0 if small else 1)
