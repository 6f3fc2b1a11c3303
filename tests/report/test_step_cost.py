"""The report's optimizer step cost section, from a real `optbench speed` CSV.

The CSV is written once per module by the real command (pytest-benchmark in a
child process, two optimizers on the scalar set, quick rounds).  No timing
assertions: the numbers are whatever this machine measured.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from optbench.cli import main
from optbench.errors import OptbenchError
from optbench.report import build_report
from optbench.report import step_cost as SC

PNG = b"\x89PNG\r\n\x1a\n"
STEP_COST_FILES = {"figures/step_cost.png", "tables/step_cost.csv", "tables/step_cost.md"}


def copy_results(results_dir: Path, dst: Path) -> Path:
    """A private copy of the shared grid (tests must not write into it)."""
    shutil.copytree(results_dir, dst, ignore=shutil.ignore_patterns("report"))
    return dst


@pytest.fixture(scope="module")
def report(results_dir, speed_csv, tmp_path_factory):
    base = tmp_path_factory.mktemp("step-cost")
    results = copy_results(results_dir, base / "results")
    out = base / "report"
    return out, build_report(results, out, speed_csv=speed_csv)


def relative(paths, out: Path) -> set[str]:
    return {Path(p).relative_to(out).as_posix() for p in paths}


def test_the_speed_csv_is_real(speed_csv):
    rows = pd.read_csv(speed_csv)
    assert {"sgd", "adam", "clip_grad_norm_", "python-sgd"} <= set(rows["name"])
    assert set(rows["param_set"]) == {"scalar"}
    assert (rows["status"] == "ok").all()


def test_figure_is_a_non_empty_png(report):
    out, paths = report
    assert STEP_COST_FILES <= relative(paths, out)
    data = (out / "figures" / "step_cost.png").read_bytes()
    assert data.startswith(PNG) and len(data) > 1024


def test_tables_hold_every_row_and_the_optimizers(report, speed_csv):
    out, _ = report
    rows = pd.read_csv(speed_csv)
    table = pd.read_csv(out / "tables" / "step_cost.csv")
    assert len(table) == len(rows) and list(table.columns) == list(rows.columns)
    md = (out / "tables" / "step_cost.md").read_text()
    assert "| optimizer | variant | param set |" in md
    for name in ("sgd", "adam", "clip_grad_norm_", "python-adam"):
        assert f"| {name} |" in md
    # adam's defaults run its fused kernel: that row carries the mark, its for-loop is the 1.00x baseline
    assert re.search(r"\| adam \| fused \* \| scalar \|", md)
    assert re.search(r"\| adam \| for-loop \| scalar \|[^\n]*\| 1\.00× \|", md)


def test_page_has_the_section_with_figure_table_and_environment(report, speed_csv):
    out, _ = report
    env = pd.read_csv(speed_csv).iloc[0]
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "Optimizer step cost" in text
        assert "figures/step_cost.png" in text and "tables/step_cost.md" in text
        assert "pytest-benchmark" in text and "median" in text
        for value in (env["device"], env["cpu"], f"{int(env['threads'])} threads", f"torch {env['torch_version']}"):
            assert str(value) in text, value
    md = (out / "report.md").read_text()
    section = md[md.index("## Optimizer step cost"):md.index("## Convergence tables")]
    assert "### scalar (1 parameter in 1 tensor)" in section
    assert "| sgd |" in section and "| adam |" in section
    # the section sits after the grid's own speed section
    assert md.index("## Speed") < md.index("## Optimizer step cost")
    html = (out / "report.html").read_text()
    for target in re.findall(r'<(?:img src|a href)="([^"]+)"', html):
        assert (out / target).is_file(), target


def test_rows_not_timed_are_listed_with_their_reason(speed_csv, tmp_path):
    rows = pd.read_csv(speed_csv)
    rows["reason"] = rows["reason"].astype(object)
    adam = rows.index[(rows["name"] == "adam") & (rows["variant"] == "foreach")]
    rows.loc[adam, ["status", "reason"]] = ["skipped", "no foreach kernel here"]
    rows.loc[adam, ["median_s", "iqr_s", "q1_s", "q3_s"]] = float("nan")
    path = tmp_path / "partial.csv"
    rows.to_csv(path, index=False)
    sc = SC.read(path)
    sc.figure = SC.figure(sc, tmp_path / "figures", {"sgd": (0, 0, 1), "adam": (1, 0, 0)})
    sc.tables = SC.write_tables(sc, tmp_path / "tables")
    assert sc.figure.path.read_bytes().startswith(PNG)
    md = sc.tables["step_cost.md"].read_text()
    assert "- scalar adam [foreach]: skipped, no foreach kernel here" in md
    assert "| adam | foreach |" not in md  # not in the timed table
    assert len(pd.read_csv(sc.tables["step_cost.csv"])) == len(rows)  # but kept in the CSV


def test_speed_steps_csv_in_the_results_folder_is_found(results_dir, speed_csv, tmp_path, capsys):
    results = copy_results(results_dir, tmp_path / "results")
    shutil.copy(speed_csv, results / SC.FILENAME)
    assert main(["report", str(results)]) == 0
    printed = relative(capsys.readouterr().out.split(), results / "report")
    assert STEP_COST_FILES <= printed
    assert "## Optimizer step cost" in (results / "report" / "report.md").read_text()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("optbench: error:") and "\n" not in err, err
    return err


def test_missing_speed_file_is_one_line_naming_it(results_dir, tmp_path, capsys):
    results = copy_results(results_dir, tmp_path / "results")
    missing = tmp_path / "nowhere" / "speed_steps.csv"
    with pytest.raises(OptbenchError) as err:
        build_report(results, speed_csv=missing)
    assert "\n" not in str(err.value) and str(missing) in str(err.value)
    assert main(["report", str(results), "--speed", str(missing)]) == 2
    err = one_line_error(capsys)
    assert str(missing) in err and f"optbench speed -o {missing}" in err
    assert not (results / "report" / "report.md").exists()  # refused before writing anything


def test_speed_file_without_the_columns_is_one_line_naming_it(results_dir, speed_csv, tmp_path, capsys):
    results = copy_results(results_dir, tmp_path / "results")
    bad = tmp_path / "old_speed.csv"
    pd.read_csv(speed_csv).drop(columns=["median_s", "q3_s"]).to_csv(bad, index=False)
    with pytest.raises(OptbenchError) as err:
        build_report(results, speed_csv=bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "median_s" in msg and "q3_s" in msg
    assert "`optbench speed -o FILE`" in msg
    # a file that is not a CSV table at all gets the same kind of line
    (tmp_path / "empty.csv").write_text("")
    assert main(["report", str(results), "--speed", str(tmp_path / "empty.csv")]) == 2
    assert str(tmp_path / "empty.csv") in one_line_error(capsys)


def test_without_a_speed_csv_the_report_is_unchanged(report, results_dir, tmp_path):
    with_speed = relative(report[1], report[0])
    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    # the same folder again without one: the step cost files go (manifest), nothing else changes
    without = relative(build_report(results_dir, out), out)
    assert without == with_speed - STEP_COST_FILES
    assert not any((out / rel).exists() for rel in STEP_COST_FILES)
    assert "step cost" not in (out / "report.md").read_text().lower()
    assert "step_cost" not in (out / "report.html").read_text()


def test_speed_only_optimizers_leave_the_grid_colours_alone():
    from optbench.report.style import optimizer_palette

    grid = optimizer_palette(["sgd", "adam"])
    both = optimizer_palette(["sgd", "adam"], extra=["adamw", "sgd", "rmsprop"])
    assert {k: both[k] for k in grid} == grid
    assert len(set(both.values())) == 4
