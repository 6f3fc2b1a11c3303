"""Small real grids for the report and leaderboard tests, each run once per session.

The built-in toy tasks are deterministic (every seed gives the same curve), so
the grids add a task whose data depend on the seed, loaded the way users load
their own: as a ``--plugin-dir`` plugin.  It also evaluates a held-out loss
every few steps, which exercises the ``val_loss`` target path of the GPT tasks
without their cost.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

NOISY_PLUGIN = textwrap.dedent('''
    """Noisy linear regression: minibatches and held-out set drawn from the run's seed."""
    import torch

    import optbench
    from optbench import Problem, TaskSpec


    def build(seed=0, device="cpu", dim=4, batch=8, noise=0.3):
        g = torch.Generator().manual_seed(1000 + seed)
        w_true = torch.linspace(-1.0, 1.0, dim)
        w = torch.zeros(dim, requires_grad=True)
        x_val = torch.randn(64, dim, generator=g)
        y_val = x_val @ w_true + noise * torch.randn(64, generator=g)

        def loss(micro):
            x = torch.randn(batch, dim, generator=g)
            y = x @ w_true + noise * torch.randn(batch, generator=g)
            return ((x @ w - y) ** 2).mean()

        def evaluate():
            return {"val_loss": float(((x_val @ w - y_val) ** 2).mean())}

        return Problem(params=[w], loss=loss, evaluate=evaluate)


    @optbench.hookimpl
    def optbench_tasks():
        return [TaskSpec("noisy-regression", build, {"dim": 4, "batch": 8, "noise": 0.3}, steps=40,
                         target_metric="val_loss", target_value=0.25, eval_every=5)]
''')


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("plugins")
    (d / "noisy_regression.py").write_text(NOISY_PLUGIN)
    return d


@pytest.fixture(scope="session")
def grid_registry(plugin_dir):
    from optbench import registry

    reg = registry.load(plugin_dirs=[str(plugin_dir)])
    assert "noisy-regression" in reg.tasks, reg.problems
    return reg


def toy_spec(seeds=(0, 1)):
    """pi with and without zero_grad, the L2 bowl with and without clipping, two lrs, two schedules,
    and the noisy task: every figure of the report has data."""
    from optbench.gridspec import GridBlock, GridSpec

    common = dict(optimizers=["sgd", "adam"], schedulers=["constant", "cosine"], steps=40,
                  hparams={"*": {"lr": [0.01, 0.1]}})
    return GridSpec([
        GridBlock(tasks=["pi"], grad_modes=["zero", "never"], seeds=[0, 1], **common),
        # lr 1.1 makes plain SGD diverge on the bowl (|1 - 2 lr| > 1) and clipping rescue it
        GridBlock(tasks=["l2-bowl"], clip=[0.0, 1.0], seeds=[0, 1],
                  **{**common, "hparams": {"*": {"lr": [0.01, 0.1, 1.1]}}}),
        GridBlock(tasks=["noisy-regression"], optimizers=["sgd", "adam"], seeds=list(seeds),
                  hparams={"*": {"lr": [0.03, 0.1]}}),
    ], name="report-test")


def noisy_spec(seeds):
    from optbench.gridspec import GridBlock, GridSpec

    return GridSpec([GridBlock(tasks=["noisy-regression"], optimizers=["sgd", "adam"], seeds=list(seeds),
                               hparams={"*": {"lr": [0.03, 0.1]}})], name=f"noisy-{len(seeds)}-seeds")


def run(spec, out: Path, reg) -> Path:
    from optbench.grid import run_grid

    run_grid(spec, out, reg, progress=False)
    return out


@pytest.fixture(scope="session")
def run_blocks(grid_registry):
    """``run_blocks([GridBlock(...)], out)`` runs a grid into ``out`` and returns the folder."""
    from optbench.gridspec import GridSpec

    return lambda blocks, out: run(GridSpec(list(blocks), name=Path(out).name), Path(out), grid_registry)


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory, grid_registry) -> Path:
    """The main small real grid (runs once; tests must not modify it: copy it first)."""
    return run(toy_spec(), tmp_path_factory.mktemp("grid") / "results", grid_registry)


@pytest.fixture(scope="session")
def seed_grids(tmp_path_factory, grid_registry) -> tuple[Path, Path]:
    """The noisy task with 2 seeds and with 6 seeds (the 2-seed folder reuses those runs)."""
    base = tmp_path_factory.mktemp("seeds")
    six = run(noisy_spec(range(6)), base / "six", grid_registry)
    two = base / "two"
    (two / "runs").mkdir(parents=True)
    import json

    for f in (six / "runs").glob("*.json"):
        if json.loads(f.read_text())["summary"]["seed"] in (0, 1):
            shutil.copy(f, two / "runs" / f.name)
    return run(noisy_spec(range(2)), two, grid_registry), six


@pytest.fixture
def results_copy(results_dir, tmp_path) -> Path:
    """A private copy of the main grid, free to damage."""
    dst = tmp_path / "results"
    shutil.copytree(results_dir, dst, ignore=shutil.ignore_patterns("report"))
    return dst


@pytest.fixture(scope="session")
def speed_csv(tmp_path_factory) -> Path:
    """A real speed table of ``optbench speed`` (two optimizers on the scalar set, rough timing)."""
    pytest.importorskip("pytest_benchmark")
    from optbench.cli import main

    path = tmp_path_factory.mktemp("speed") / "speed_steps.csv"
    assert main(["speed", "--quick", "--sets", "scalar", "--optimizers", "sgd,adam", "-o", str(path)]) == 0
    return path
