"""The leaderboard's optimizer step cost, from a real `optbench speed` CSV.

The CSV is written once per module by the real command (pytest-benchmark in a
child process, sgd and adam on the scalar set, quick rounds), as in
test_step_cost.py.  No timing assertions: the numbers are whatever this
machine measured; the tests check that they are carried over faithfully.
"""

from __future__ import annotations

import csv
import math
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

from optbench.cli import main
from optbench.errors import OptbenchError
from optbench.leaderboard import (
    COLUMNS,
    LEADERBOARD_SCHEMA_VERSION,
    build_leaderboard,
    merge,
    read_leaderboard,
    row_checksum,
    write_leaderboard,
)
from optbench.report import build_report

STEP_COLUMNS = ["optimizer_step_s", "optimizer_step_set"]


@pytest.fixture(scope="module")
def speed(speed_csv) -> pd.DataFrame:
    return pd.read_csv(speed_csv, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def board(results_dir, speed_csv):
    return build_leaderboard([results_dir], speed_csv=speed_csv)


def default_median(speed: pd.DataFrame, name: str, param_set: str = "scalar") -> float:
    row = speed[(speed["kind"] == "optimizer") & (speed["name"] == name) & speed["is_default"]
                & (speed["param_set"] == param_set) & (speed["status"] == "ok")]
    assert len(row) == 1, row
    return float(row["median_s"].iloc[0])


def copy_results(results_dir: Path, dst: Path) -> Path:
    shutil.copytree(results_dir, dst, ignore=shutil.ignore_patterns("report", "speed_steps.csv"))
    return dst


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _write_rows(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def edited_speed_csv(speed_csv: Path, out: Path, edit) -> Path:
    """The real speed CSV passed through ``edit(DataFrame) -> DataFrame``, written as text as optbench does."""
    df = pd.read_csv(speed_csv, dtype=str, keep_default_na=False)
    edit(df).to_csv(out, index=False)
    return out


# ---------------------------------------------------------------------------
# building


def test_columns_sit_after_time_per_step_and_are_typed():
    cols = list(COLUMNS)
    assert cols[cols.index("time_per_step") + 1:cols.index("time_per_step") + 3] == STEP_COLUMNS
    assert COLUMNS["optimizer_step_s"] == "float" and COLUMNS["optimizer_step_set"] == "str"
    assert LEADERBOARD_SCHEMA_VERSION == 2


def test_step_cost_is_the_default_variants_median_on_the_closest_set(board, speed):
    assert set(board["optimizer"]) == {"sgd", "adam"}
    for _, row in board.iterrows():
        # every task of the grid has a few bytes of parameters: the scalar set is the closest
        assert row["optimizer_step_set"] == "scalar", row["task"]
        assert row["optimizer_step_s"] == default_median(speed, row["optimizer"])
    # adam's default is its fused kernel, not the for-loop
    loop = speed[(speed["name"] == "adam") & (speed["variant"] == "for-loop")]["median_s"].iloc[0]
    fused = default_median(speed, "adam")
    assert speed[(speed["name"] == "adam") & (speed["variant"] == "fused")]["is_default"].all()
    if loop != fused:
        assert not (board.loc[board["optimizer"] == "adam", "optimizer_step_s"] == loop).any()


def test_no_speed_table_leaves_the_columns_empty(results_dir):
    lb = build_leaderboard([results_dir])
    assert lb["optimizer_step_s"].isna().all() and (lb["optimizer_step_set"] == "").all()


def test_an_optimizer_missing_from_the_table_is_empty(results_dir, speed_csv, speed, tmp_path):
    no_adam = edited_speed_csv(speed_csv, tmp_path / "no-adam.csv", lambda d: d[d["name"] != "adam"])
    lb = build_leaderboard([results_dir], speed_csv=no_adam)
    adam, sgd = lb[lb["optimizer"] == "adam"], lb[lb["optimizer"] == "sgd"]
    assert adam["optimizer_step_s"].isna().all() and (adam["optimizer_step_set"] == "").all()
    assert (sgd["optimizer_step_s"] == default_median(speed, "sgd")).all()
    assert (sgd["optimizer_step_set"] == "scalar").all()


def test_a_row_that_is_not_ok_or_not_the_default_does_not_count(results_dir, speed_csv, tmp_path):
    def edit(d):
        d = d.copy()
        d.loc[d["name"] == "sgd", "status"] = "failed"
        d.loc[d["name"] == "adam", "is_default"] = "False"
        return d

    lb = build_leaderboard([results_dir], speed_csv=edited_speed_csv(speed_csv, tmp_path / "bad.csv", edit))
    assert lb["optimizer_step_s"].isna().all() and (lb["optimizer_step_set"] == "").all()


def add_set(d: pd.DataFrame, name: str, param_bytes: int, factor: float, keep_param_bytes=True) -> pd.DataFrame:
    """The scalar rows again as parameter set ``name`` of ``param_bytes`` bytes, ``factor`` times slower."""
    extra = d.copy()
    extra["param_set"] = name
    extra["n_params"] = str(param_bytes // 4)
    extra["param_bytes"] = str(param_bytes)
    extra["median_s"] = [repr(float(m) * factor) for m in extra["median_s"]]
    out = pd.concat([d, extra], ignore_index=True)
    return out if keep_param_bytes else out.drop(columns=["param_bytes"])


@pytest.mark.parametrize("keep_param_bytes", [True, False], ids=["param_bytes", "n_params"])
def test_the_set_closest_on_a_log_scale_is_chosen_per_task(results_dir, speed_csv, speed, tmp_path,
                                                           keep_param_bytes):
    # pi has 4 bytes of parameters, the bowl 8, the noisy regression 16; a set of 8 bytes beside the
    # scalar one (4 bytes) and a huge one: pi stays on scalar, the others move to the 8-byte set
    table = edited_speed_csv(speed_csv, tmp_path / "sets.csv", lambda d: add_set(
        add_set(d, "model5-cpu", 8, 10.0, keep_param_bytes), "synthetic-10m", 39_398_400, 1000.0, keep_param_bytes))
    lb = build_leaderboard([results_dir], speed_csv=table).set_index(["task", "optimizer"])
    summary = pd.read_csv(results_dir / "summary.csv")
    sizes = summary.groupby("task")["param_bytes"].median().to_dict()
    assert sizes == {"pi": 4, "l2-bowl": 8, "noisy-regression": 16}
    expected_set = {"pi": "scalar", "l2-bowl": "model5-cpu", "noisy-regression": "model5-cpu"}
    for (task, opt), row in lb.iterrows():
        assert row["optimizer_step_set"] == expected_set[task], task
        factor = 1.0 if expected_set[task] == "scalar" else 10.0
        assert row["optimizer_step_s"] == pytest.approx(default_median(speed, opt) * factor, rel=1e-12)


def test_the_speed_table_in_the_results_folder_is_found(results_dir, speed_csv, board, tmp_path):
    copy = copy_results(results_dir, tmp_path / "results")
    shutil.copy(speed_csv, copy / "speed_steps.csv")
    found = build_leaderboard([copy])
    pd.testing.assert_frame_equal(found[STEP_COLUMNS], board[STEP_COLUMNS])
    # several folders: the first one that has a table
    pooled = build_leaderboard([results_dir, copy])
    pd.testing.assert_frame_equal(pooled[STEP_COLUMNS], board[STEP_COLUMNS])
    # an explicit table wins over the one in the folder
    other = edited_speed_csv(speed_csv, tmp_path / "no-sgd.csv", lambda d: d[d["name"] != "sgd"])
    explicit = build_leaderboard([copy], speed_csv=other)
    assert explicit.loc[explicit["optimizer"] == "sgd", "optimizer_step_s"].isna().all()


def test_a_bad_speed_table_fails_in_one_line(results_dir, tmp_path):
    with pytest.raises(OptbenchError) as err:
        build_leaderboard([results_dir], speed_csv=tmp_path / "nowhere.csv")
    assert "\n" not in str(err.value) and "optbench speed -o" in str(err.value)
    with pytest.raises(OptbenchError) as err:
        build_leaderboard([results_dir], speed_csv=results_dir / "summary.csv")
    assert "\n" not in str(err.value) and "not a speed table" in str(err.value)


# ---------------------------------------------------------------------------
# files and merging


def test_write_read_round_trip_is_exact(results_dir, speed_csv, board, tmp_path):
    half = edited_speed_csv(speed_csv, tmp_path / "no-adam.csv", lambda d: d[d["name"] != "adam"])
    for lb in (board, build_leaderboard([results_dir], speed_csv=half)):
        path = write_leaderboard(lb, tmp_path / "lb.csv")
        back = read_leaderboard(path).drop(columns=["_source"])
        pd.testing.assert_frame_equal(back, lb, check_dtype=False)
        rows = _rows(path)
        assert all(row_checksum(r) == r[-1] for r in rows[1:])
        i = rows[0].index("optimizer_step_s")
        assert {float(r[i]) for r in rows[1:] if r[i]} == set(lb["optimizer_step_s"].dropna())


def test_the_checksum_covers_the_step_cost(board, tmp_path):
    path = write_leaderboard(board, tmp_path / "a.csv")
    rows = _rows(path)
    i = rows[0].index("optimizer_step_s")
    rows[2][i] = repr(float(rows[2][i]) / 10)  # a faster step than was measured
    bad = _write_rows(tmp_path / "faster.csv", rows)
    with pytest.raises(OptbenchError, match=r"faster\.csv line 3 .*checksum"):
        read_leaderboard(bad)


def test_merge_of_two_v2_files_keeps_the_step_costs_as_carried(board, seed_grids, tmp_path):
    a = write_leaderboard(board, tmp_path / "a.csv")  # with a speed table
    b = write_leaderboard(build_leaderboard([seed_grids[1]]), tmp_path / "b.csv")  # without
    sources = pd.concat([read_leaderboard(a), read_leaderboard(b)], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = merge([a, b])
    assert not merged.duplicated(["task", "optimizer"]).any()
    assert set(merged["task"]) == {"pi", "l2-bowl", "noisy-regression"}
    for _, row in merged.iterrows():
        src = sources[(sources["task"] == row["task"]) & (sources["optimizer"] == row["optimizer"])
                      & (sources["config_hash"] == row["config_hash"])]
        assert len(src) >= 1
        cost = src["optimizer_step_s"].iloc[0]
        assert (math.isnan(cost) and math.isnan(row["optimizer_step_s"])) or cost == row["optimizer_step_s"]
        assert row["optimizer_step_set"] == src["optimizer_step_set"].iloc[0]
    from_a = merged[merged["task"].isin(["pi", "l2-bowl"])]
    assert from_a["optimizer_step_s"].notna().all() and (from_a["optimizer_step_set"] == "scalar").all()
    out = write_leaderboard(merged, tmp_path / "all.csv")
    pd.testing.assert_frame_equal(read_leaderboard(out).drop(columns=["_source"]), merged, check_dtype=False)


def as_v1(rows: list[list[str]]) -> list[list[str]]:
    """A schema-1 file as optbench 1 wrote it: no step-cost columns, schema_version 1, rows signed."""
    drop = {rows[0].index(c) for c in STEP_COLUMNS}
    out = [[c for i, c in enumerate(r) if i not in drop] for r in rows]
    for r in out[1:]:
        r[0] = "1"
        r[-1] = row_checksum(r)
    return out


def test_a_schema_1_file_is_refused_in_one_line(board, tmp_path):
    a = write_leaderboard(board, tmp_path / "a.csv")
    old = _write_rows(tmp_path / "old.csv", as_v1(_rows(a)))
    for call in (lambda: read_leaderboard(old), lambda: merge([a, old])):
        with pytest.raises(OptbenchError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg
        assert f"{old} is a leaderboard of schema 1, this optbench reads schema 2" in msg
        assert "missing optimizer_step_s, optimizer_step_set" in msg and "optbench leaderboard" in msg
    # a schema-1 header without rows is named as such too
    empty = _write_rows(tmp_path / "empty-v1.csv", as_v1(_rows(a))[:1])
    with pytest.raises(OptbenchError, match=r"empty-v1\.csv is a leaderboard of schema 1, this optbench reads schema 2"):
        read_leaderboard(empty)


# ---------------------------------------------------------------------------
# command line and report


def test_cli_speed_option(results_dir, speed_csv, speed, tmp_path, capsys):
    out = tmp_path / "lb.csv"
    assert main(["leaderboard", str(results_dir), "--speed", str(speed_csv), "-o", str(out)]) == 0
    assert "optimizer_step" in capsys.readouterr().out
    lb = read_leaderboard(out)
    assert (lb.loc[lb["optimizer"] == "sgd", "optimizer_step_s"] == default_median(speed, "sgd")).all()
    plain = tmp_path / "plain.csv"
    assert main(["leaderboard", str(results_dir), "-o", str(plain)]) == 0
    assert "optimizer_step" not in capsys.readouterr().out
    assert read_leaderboard(plain)["optimizer_step_s"].isna().all()
    assert main(["leaderboard", "merge", str(out), str(plain), "--speed", str(speed_csv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optbench: error:") and "\n" not in err and "--speed" in err
    assert main(["leaderboard", str(results_dir), "--speed", str(tmp_path / "nowhere.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_report_leaderboard_carries_the_step_cost(results_dir, speed_csv, speed, tmp_path):
    copy = copy_results(results_dir, tmp_path / "results")
    out = tmp_path / "report"
    build_report(copy, out, speed_csv=speed_csv)
    lb = read_leaderboard(out / "leaderboard.csv")
    for _, row in lb.iterrows():
        assert row["optimizer_step_set"] == "scalar"
        assert row["optimizer_step_s"] == default_median(speed, row["optimizer"])
