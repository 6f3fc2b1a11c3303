"""`optbench report` on small real grids: every figure, an offline page, clear schema errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from optbench.cli import main
from optbench.errors import OptbenchError
from optbench.report import build_report
from optbench.schema import SCHEMA_VERSION

PNG = b"\x89PNG\r\n\x1a\n"

#: what the main test grid must produce: it has data for every kind of figure
EXPECTED_FIGURES = {
    "loss_best_pi.png", "loss_grid_pi.png",
    "loss_best_l2-bowl.png", "loss_grid_l2-bowl.png",
    "loss_best_noisy-regression.png", "val_loss_best_noisy-regression.png", "loss_grid_noisy-regression.png",
    "lr_sensitivity.png", "clipping_l2-bowl.png", "grad_modes_pi.png", "speed.png",
}


@pytest.fixture(scope="module")
def report(results_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = build_report(results_dir, out)
    return out, paths, None


def test_every_figure_is_written_and_not_empty(report):
    out, paths, _ = report
    figures = {p.name: p for p in paths if p.suffix == ".png"}
    assert set(figures) == EXPECTED_FIGURES
    for p in figures.values():
        data = p.read_bytes()
        assert data.startswith(PNG), p
        assert len(data) > 1024, f"{p} is suspiciously small ({len(data)} bytes)"
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_tables_are_written_as_markdown_and_csv(report, results_dir):
    out, _, _ = report
    conv = pd.read_csv(out / "tables" / "convergence.csv")
    assert len(conv) == len(pd.read_csv(results_dir / "convergence.csv"))
    assert {"rank", "lr", "final_target_metric_mean", "final_target_metric_ci95"} <= set(conv.columns)
    # within each task the table is in ranking order
    assert all((g["rank"].diff().dropna() > 0).all() for _, g in conv.groupby("task"))
    assert len(pd.read_csv(out / "tables" / "speed.csv")) == len(pd.read_csv(results_dir / "speed.csv"))
    for name in ("convergence.md", "speed.md"):
        text = (out / "tables" / name).read_text()
        assert "| optimizer |" in text and "## pi" in text and "## noisy-regression" in text


def test_page_opens_offline(report):
    out, paths, _ = report
    assert paths[0] == out / "report.md" and paths[1] == out / "report.html"
    page = (out / "report.html").read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"<link[^>]+stylesheet", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I), "page fetches from the network"
    assert "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {Path(i).name for i in images} == EXPECTED_FIGURES
    for target in images + re.findall(r'<a href="([^"]+)"', page):
        assert (out / target).is_file(), target
    md = (out / "report.md").read_text()
    md_links = re.findall(r"\]\(([^)]+)\)", md)
    assert {Path(i).name for i in md_links} >= EXPECTED_FIGURES
    assert all((out / link).is_file() for link in md_links)


def test_page_shows_leaderboard_tables_and_problems(report):
    out, _, _ = report
    md = (out / "report.md").read_text()
    for heading in ("## Leaderboard", "## Loss curves", "## Learning-rate sensitivity", "## Gradient clipping",
                    "## Gradient modes", "## Speed", "## Convergence tables", "## Provenance"):
        assert heading in md
    assert "### noisy-regression (target val_loss ≤ 0.25)" in md
    assert (out / "leaderboard.csv").is_file()


def test_old_schema_gives_one_clear_line(results_copy):
    meta = json.loads((results_copy / "meta.json").read_text())
    meta["schema"] = SCHEMA_VERSION - 1
    (results_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(OptbenchError) as err:
        build_report(results_copy)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(results_copy) in msg
    assert f"schema {SCHEMA_VERSION - 1}" in msg and f"reads schema {SCHEMA_VERSION}" in msg
    assert "optbench grid" in msg  # the fix


def test_missing_column_gives_one_clear_line(results_copy):
    summary = pd.read_csv(results_copy / "summary.csv")
    summary.drop(columns=["final_target_metric"]).to_csv(results_copy / "summary.csv", index=False)
    with pytest.raises(OptbenchError, match=r"summary\.csv lacks column\(s\) final_target_metric"):
        build_report(results_copy)


def test_not_a_results_folder(tmp_path):
    with pytest.raises(OptbenchError, match="not an optbench results folder"):
        build_report(tmp_path)


def test_cli_report_skips_figures_without_data(seed_grids, tmp_path, capsys):
    results = tmp_path / "results"  # one task, no clipping, no gradient modes
    shutil.copytree(seed_grids[0], results, ignore=shutil.ignore_patterns("report"))
    assert main(["report", str(results)]) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    out = results / "report"  # the default
    assert printed[:2] == [out / "report.md", out / "report.html"]
    assert all(p.exists() for p in printed)
    assert {p.name for p in printed if p.suffix == ".png"} == {
        "loss_best_noisy-regression.png", "val_loss_best_noisy-regression.png", "loss_grid_noisy-regression.png",
        "lr_sensitivity.png", "speed.png"}
    md = (out / "report.md").read_text()
    assert "## Gradient clipping" not in md and "## Gradient modes" not in md

    (results / "meta.json").write_text(json.dumps({"schema": 0}))
    assert main(["report", str(results), "-o", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optbench: error:") and "\n" not in err and "schema 0" in err


def test_each_optimizer_keeps_its_colour():
    from optbench.report.style import optimizer_palette

    a = optimizer_palette(["sgd", "adam", "adamw"])
    b = optimizer_palette(["adamw", "sgd", "adam", "adamw"])
    assert a == b and len(set(a.values())) == 3
    assert len(set(optimizer_palette([f"opt{i}" for i in range(25)]).values())) == 25


def test_importing_report_is_light():
    import subprocess
    import sys

    code = ("import sys, optbench.report, optbench.leaderboard, optbench.commands.report, "
            "optbench.commands.leaderboard; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'seaborn', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_rebuilt_report_removes_only_its_own_stale_files(run_blocks, seed_grids, tmp_path):
    from optbench.gridspec import GridBlock

    pi = run_blocks([GridBlock(tasks=["pi"], optimizers=["sgd"], steps=20)], tmp_path / "pi")
    out = tmp_path / "shared-folder"
    build_report(pi, out)
    assert (out / "figures" / "loss_grid_pi.png").exists()
    mine = out / "figures" / "my_own_plot.png"
    mine.write_bytes(PNG)
    build_report(seed_grids[0], out)  # a grid without pi: its figures go, the user's file stays
    assert not (out / "figures" / "loss_grid_pi.png").exists()
    assert (out / "figures" / "loss_grid_noisy-regression.png").exists()
    assert mine.exists()
