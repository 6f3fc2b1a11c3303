"""Read a results folder written by ``optbench grid`` and check it is one this version understands.

Every reader (report, leaderboard) goes through :func:`load` so that a folder
from another schema version fails the same way everywhere: one line that
names the folder, the version found and what to do about it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from optbench import __version__
from optbench.errors import OptbenchError
from optbench.schema import AXES, CONVERGENCE_METRICS, SCHEMA_VERSION, SPEED_METRICS, STEP_COLUMNS, SUMMARY_COLUMNS

#: the columns that identify one setting: every axis of the grid except the seed
SETTING = tuple(a for a in AXES if a != "seed")

#: columns every aggregate table carries besides ``<metric>_mean`` / ``<metric>_ci95``
AGGREGATE_EXTRA = ("n_seeds", "n_ok", "divergence_rate")


@dataclass
class Results:
    """One results folder, loaded and validated."""

    path: Path
    meta: dict
    summary: pd.DataFrame
    convergence: pd.DataFrame
    speed: pd.DataFrame
    _runs: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def runs(self) -> pd.DataFrame:
        """Per-step records (read on first use: it is the one large file)."""
        if self._runs is None:
            self._runs = _read_runs(self.path)
        return self._runs

    @property
    def tasks(self) -> list[str]:
        return sorted(self.summary["task"].unique())

    @property
    def optimizers(self) -> list[str]:
        return sorted(self.summary["optimizer"].unique())

    def task_info(self, task: str) -> dict:
        """``{version, target_metric, target_value, ...}`` as meta.json records it."""
        return dict((self.meta.get("tasks") or {}).get(task) or {})

    def target_metric(self, task: str) -> str:
        return self.task_info(task).get("target_metric") or "loss"

    def target_value(self, task: str) -> float:
        v = self.task_info(task).get("target_value")
        return math.nan if v is None else float(v)


def _fix(path: Path) -> str:
    return (
        f"re-run the grid with this optbench ({__version__}) to regenerate it: "
        f"`optbench grid ... --out {path}`"
    )


def _schema_error(path: Path, found, writer) -> OptbenchError:
    by = f" by optbench {writer}" if writer else ""
    return OptbenchError(
        f"results folder {path} was written{by} with results schema {found!r}, but optbench {__version__} "
        f"reads schema {SCHEMA_VERSION}; {_fix(path)}, or report it with the optbench version that wrote it"
    )


def _require_columns(path: Path, name: str, columns, required) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise OptbenchError(
            f"{path / name} lacks column(s) {', '.join(missing)} of results schema {SCHEMA_VERSION}; "
            f"it was written by another optbench version or edited by hand: {_fix(path)}"
        )


#: text columns of the CSV tables; everything else is numeric
TEXT_COLUMNS = ("run_key", "task", "optimizer", "hparams", "scheduler", "grad_mode", "task_version",
                "optimizer_dist", "optimizer_version", "status", "reason", "device", "config_hash")


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    file = path / name
    if not file.is_file():
        raise OptbenchError(
            f"results folder {path} has no {name}; the grid did not finish writing it: "
            f"re-run `optbench grid ... --out {path}` (finished runs are reused)"
        )
    # Only an empty cell is missing: a task or optimizer may legitimately be called "NA" or "null".
    df = pd.read_csv(file, keep_default_na=False, na_values=[""],
                     dtype={c: str for c in TEXT_COLUMNS})
    for c in TEXT_COLUMNS:
        if c in df.columns:
            df[c] = df[c].fillna("")
    return df


def _numeric(df: pd.DataFrame, columns) -> None:
    """Make sure numeric columns are floats even when a column is entirely empty or odd."""
    for c in columns:
        if c in df.columns and not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = pd.to_numeric(df[c], errors="coerce")


def _read_runs(path: Path) -> pd.DataFrame:
    file = path / "runs.parquet"
    if not file.is_file():
        raise OptbenchError(
            f"results folder {path} has no runs.parquet; re-run `optbench grid ... --out {path}`"
        )
    runs = pd.read_parquet(file)
    _require_columns(path, "runs.parquet", runs.columns, ("run_key", *STEP_COLUMNS))
    return runs


def metric_columns(metrics) -> list[str]:
    return [f"{m}_{s}" for m in metrics for s in ("mean", "ci95")]


def load(results_dir) -> Results:
    """Load and validate ``results_dir``; raise :class:`OptbenchError` with one line if it is not usable."""
    path = Path(results_dir)
    if not path.is_dir():
        raise OptbenchError(f"{path} is not a folder; pass the --out folder of `optbench grid`")
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise OptbenchError(
            f"{path} is not an optbench results folder (no meta.json); "
            f"create one with `optbench grid ... --out {path}`"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise OptbenchError(f"{meta_file} is not valid JSON ({exc}); {_fix(path)}") from None
    if not isinstance(meta, dict):
        raise _schema_error(path, None, None)
    if meta.get("schema") != SCHEMA_VERSION:
        raise _schema_error(path, meta.get("schema"), meta.get("optbench_version"))

    summary = _read_csv(path, "summary.csv")
    _require_columns(path, "summary.csv", summary.columns, SUMMARY_COLUMNS)
    _numeric(summary, [c for c in SUMMARY_COLUMNS if c not in TEXT_COLUMNS])

    group = list(SETTING)
    convergence = _read_csv(path, "convergence.csv")
    _require_columns(path, "convergence.csv", convergence.columns,
                     (*group, *metric_columns(CONVERGENCE_METRICS), *AGGREGATE_EXTRA))
    _numeric(convergence, [c for c in convergence.columns if c not in TEXT_COLUMNS])
    speed = _read_csv(path, "speed.csv")
    _require_columns(path, "speed.csv", speed.columns, (*group, *metric_columns(SPEED_METRICS)))
    _numeric(speed, [c for c in speed.columns if c not in TEXT_COLUMNS])
    return Results(path=path, meta=meta, summary=summary, convergence=convergence, speed=speed)


def _median_or_inf(x: pd.Series) -> float:
    """Median where a missing value (never reached) counts as +inf, so that a
    setting reaching the target on fewer than half its seeds has an infinite median."""
    return float(np.median(x.fillna(np.inf).to_numpy(dtype=float))) if len(x) else math.nan


def settings_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (every grid axis but the seed) with the numbers used to rank settings.

    Skipped runs (an optimizer that declares a task unsupported) are left out:
    they were never tried.  Columns: ``lr``, ``n_seeds``, ``n_ok``,
    ``failure_rate`` (not ok: diverged, failed or timed out), ``divergence_rate``,
    ``score`` / ``score_ci95`` (mean and 95 % CI of the final target metric over
    the seeds that finished), ``steps_to_target`` / ``time_to_target`` (median
    over seeds, a seed that never reaches the target or did not finish counting
    as +inf), ``reached_target`` (fraction of seeds), ``time_per_step`` (median
    over finished seeds) and ``config_hashes``.  Rows are in ranking order
    (see :func:`rank_settings`).
    """
    from optbench.report.stats import ci95_halfwidth

    s = summary[summary["status"] != "skipped"].copy()
    ok = s["status"] == "ok"
    # a run that did not finish has no trustworthy time-to-target
    s.loc[~ok, ["steps_to_target", "time_to_target"]] = np.nan
    s["_ok_score"] = s["final_target_metric"].where(ok)
    s["_ok_tps"] = s["time_per_step"].where(ok)
    g = s.groupby(list(SETTING), sort=False, dropna=False)
    out = pd.DataFrame({
        "lr": g["lr"].first(),
        "n_seeds": g.size(),
        "n_ok": g["status"].agg(lambda x: int((x == "ok").sum())),
        "failure_rate": g["status"].agg(lambda x: float((x != "ok").mean())),
        "divergence_rate": g["status"].agg(lambda x: float((x == "diverged").mean())),
        "score": g["_ok_score"].mean(),
        "score_ci95": g["_ok_score"].agg(ci95_halfwidth),
        "steps_to_target": g["steps_to_target"].agg(_median_or_inf),
        "time_to_target": g["time_to_target"].agg(_median_or_inf),
        "reached_target": g["steps_to_target"].agg(lambda x: float(x.notna().mean())),
        "time_per_step": g["_ok_tps"].median(),
        "config_hashes": g["config_hash"].agg(lambda x: ",".join(sorted(set(x)))),
    }).reset_index()
    return rank_settings(out)


def rank_settings(settings: pd.DataFrame) -> pd.DataFrame:
    """Order settings best first: fewest unfinished seeds, then lowest mean final
    target metric, then shortest median time-to-target, then fastest step."""
    key = settings.assign(
        _score=settings["score"].fillna(np.inf),
        _ttt=settings["time_to_target"].fillna(np.inf),
        _tps=settings["time_per_step"].fillna(np.inf),
    )
    order = key.sort_values(["failure_rate", "_score", "_ttt", "_tps"], kind="stable").index
    return settings.loc[order].reset_index(drop=True)


def best_settings(settings: pd.DataFrame, by) -> pd.DataFrame:
    """The best setting for every combination of the ``by`` columns (``settings`` is ranked)."""
    return settings.drop_duplicates(list(by), keep="first").reset_index(drop=True)
