"""How long ``optbench report`` and ``optbench leaderboard`` take on the default grid (issue 4).

benchopt's static HTML export took 87 s on the development machine.  The
input is the ``quick`` preset's toy part (133 runs, 8 figures), run once per
module; the benchmark is the whole report (figures, tables, page) and the
leaderboard, each in a fresh folder.
"""

from __future__ import annotations

import pytest

from optbench import registry
from optbench.config import load_preset_dict, spec_from_dict
from optbench.grid import run_grid
from optbench.gridspec import GridSpec


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    spec = spec_from_dict(load_preset_dict("quick"), "quick")
    toy = [b for b in spec.blocks if not any("model5" in t for t in b.tasks)]
    run_grid(GridSpec(toy, name=spec.name), out, registry.load(), progress=False)
    return out


def test_report(benchmark, quick_results, tmp_path):
    from optbench.report import build_report

    benchmark.group = "report-quick-grid"
    counter = iter(range(10**6))
    paths = benchmark.pedantic(lambda: build_report(quick_results, tmp_path / f"r{next(counter)}"),
                               rounds=1 if getattr(benchmark, "disabled", False) else 3, iterations=1)
    assert sum(p.suffix == ".png" for p in paths) >= 8


def test_leaderboard(benchmark, quick_results):
    from optbench.leaderboard import build_leaderboard

    benchmark.group = "report-quick-grid"
    board = benchmark(build_leaderboard, [quick_results])
    assert len(board) == 12  # 2 tasks x 6 optimizers
