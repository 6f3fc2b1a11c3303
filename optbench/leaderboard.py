"""The leaderboard: one row per (task, optimizer), publishable as CSV and mergeable.

Each row is the best setting the grid found for that optimizer on that task,
the tuning budget that bought it, its score with a 95 % confidence interval
over seeds, how fast it reached the task's target, and a cross-task score.
Every row carries its provenance and a checksum, so rows gathered from many
people can be merged and checked (:func:`merge`).

**Choosing the best setting.**  A *setting* is every axis of the grid but the
seed (hyper-parameters, scheduler, gradient mode, clipping).  Settings are
ordered by: the fraction of seeds that did not finish (diverged, failed or
timed out), then the mean over finished seeds of the task's target metric at
the last step (lower is better), then the median time-to-target, then the
median time per step.  The first one is the row's setting and ``score`` is
that mean, ``score_ci95`` the half-width of its Student-t 95 % interval.
``n_settings`` is how many settings were tried for the optimizer on the task
(its tuning budget) and ``n_runs`` how many runs that took.

**Steps- and time-to-target.**  A run reaches the target the first step its
target metric is at or below the task's ``target_value``.  ``steps_to_target``
and ``time_to_target`` (seconds of training) are medians over the best
setting's seeds, a seed that never reaches the target or does not finish
counting as infinite, so they are ``inf`` unless more than half the seeds
got there; ``reached_target`` is the fraction that did.

**Optimizer step cost** (from the speed table of ``optbench speed -o CSV``).
``optimizer_step_s`` is the ``median_s`` of one ``optimizer.step()`` of the
row's optimizer in the implementation its defaults run: the speed-table row
with ``kind`` optimizer, ``name`` the row's optimizer, ``is_default`` true and
``status`` ok, on the parameter set ``optimizer_step_set``.  The parameter set
is chosen per task, the same for every optimizer on it: of the sets in the
table, the one whose size (``param_bytes``; ``4 * n_params`` where that is
missing, the table being float32) is closest on a log scale to the task's
(the median ``param_bytes`` of the task's runs in the grid), the smaller set
on a tie.  Both cells are empty when there is no speed table, when the task's
size is unknown, or when the optimizer has no such ok row on that set (it was
not timed there, or failed).  The table is ``--speed CSV`` when given, else
the first ``RESULTS_DIR/speed_steps.csv`` found among the results folders.
It is a separate measurement from the grid (gradients already in place, no
forward or backward pass): ``time_per_step`` is the whole training step.
Merging keeps these cells as the rows carry them.

**Cross-task score** (after AlgoPerf's performance profiles).  On each task
*k*, optimizer *o*'s time-to-target ratio is
``r(o, k) = t(o, k) / min over optimizers of t(·, k)``: 1 for the fastest,
``inf`` for an optimizer that does not reach the target on the task or has
no row for it.  Tasks on which no optimizer reaches the target are left out;
*K* is the number of tasks that remain (``cross_task_tasks``).  The
performance profile ``rho_o(tau)`` is the fraction of those *K* tasks with
``r(o, k) <= tau``, and the score is its normalised area up to
``tau_max = 4``::

    cross_task_score(o) = 1/(tau_max - 1) * integral from 1 to tau_max of rho_o(tau) dtau
                        = 1/K * sum over k of clip((tau_max - r(o, k)) / (tau_max - 1), 0, 1)

So 1 means fastest to target on every task, 0 means never within 4x of the
fastest on any.  ``cross_task_score`` uses wall-clock ``time_to_target``
(meaningful between rows measured on the same machine);
``cross_task_score_steps`` applies the same rule to ``steps_to_target``
(hardware-independent).  ``time_ratio`` / ``steps_ratio`` are the row's
``r(o, k)``.  Both are recomputed from all rows whenever leaderboards are
merged.

**Provenance and integrity.**  ``optbench_version``, ``optimizer_dist``,
``optimizer_version``, ``torch_version``, ``python_version``, ``device``,
``threads``, ``git_commit``, ``task_version``, ``task_settings`` (the
task's resolved parameters, steps and target, as JSON), ``task_hash`` (hash
of the task's name, version and settings) and
``config_hash`` (hash of the run keys of the best setting's runs, which hash
their full resolved configuration) travel with every row, with the
leaderboard ``schema_version``.  ``checksum`` is a hash of the row's other
cells exactly as written: it makes hand edits evident; it is not a signature
(anyone with optbench can recompute it).  Text cells that a spreadsheet would
run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) are written with a leading ``'``; numeric cells stay numbers.

**Merging** (``optbench leaderboard merge A.csv B.csv -o all.csv``) checks
every file's columns, schema version, cell types and row checksums; refuses
rows of one task that differ in ``task_version`` or ``task_settings``,
naming both rows and what differs; keeps, for a (task, optimizer) present in
several files, the better row by the ranking rule above (with a warning that
names the row left out); then recomputes ``rank`` (position within the task
by the same rule) and the cross-task columns over the merged rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from optbench.errors import OptbenchError

if TYPE_CHECKING:  # pandas is imported when a leaderboard is built, not when optbench starts
    import pandas as pd

#: bump when a column is added, removed or changes meaning
LEADERBOARD_SCHEMA_VERSION = 2

#: upper end of the performance-profile integral (AlgoPerf uses 4)
TAU_MAX = 4.0

#: the file's columns, in order, with their type: "str", "int" or "float"
COLUMNS: dict[str, str] = {
    "schema_version": "int",
    "task": "str",
    "task_version": "str",
    "task_hash": "str",
    "task_settings": "str",
    "target_metric": "str",
    "target_value": "float",
    "optimizer": "str",
    "rank": "int",
    "hparams": "str",
    "lr": "float",
    "scheduler": "str",
    "grad_mode": "str",
    "clip": "float",
    "n_settings": "int",
    "n_runs": "int",
    "n_seeds": "int",
    "n_ok": "int",
    "score": "float",
    "score_ci95": "float",
    "steps_to_target": "float",
    "time_to_target": "float",
    "reached_target": "float",
    "divergence_rate": "float",
    "time_per_step": "float",
    "optimizer_step_s": "float",
    "optimizer_step_set": "str",
    "steps_ratio": "float",
    "time_ratio": "float",
    "cross_task_score": "float",
    "cross_task_score_steps": "float",
    "cross_task_tasks": "int",
    "optbench_version": "str",
    "optimizer_dist": "str",
    "optimizer_version": "str",
    "torch_version": "str",
    "python_version": "str",
    "device": "str",
    "threads": "int",
    "git_commit": "str",
    "config_hash": "str",
    "checksum": "str",
}

#: the header of each earlier schema, so that a file of one is named as such even without rows
_OLD_HEADERS = {1: [c for c in COLUMNS if c not in ("optimizer_step_s", "optimizer_step_set")]}

#: int columns that may be empty (not every environment reports a thread count)
_NULLABLE_INT = {"threads"}

#: what a spreadsheet treats as the start of a formula (OWASP's list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: mixed into the checksum so that a plain sha256 of the cells does not pass for one
_CHECKSUM_SALT = b"optbench-leaderboard-row\x1f"

_INT = re.compile(r"^-?\d+$")


class LeaderboardWarning(UserWarning):
    """Something about the merged rows a reader should know; the CLI prints it as one line."""


# ---------------------------------------------------------------------------
# building


def build_leaderboard(results_dirs: Iterable, speed_csv=None) -> "pd.DataFrame":
    """One row per (task, optimizer) from one or more results folders (see the module docstring).

    Runs from several folders are pooled (a run present in two folders counts
    once).  ``speed_csv`` is the speed table (``optbench speed -o CSV``) the
    ``optimizer_step_s`` column comes from; None: the first
    ``<results_dir>/speed_steps.csv`` among ``results_dirs``, if any.  Raises
    :class:`OptbenchError` when a folder is not readable by this version, when
    one task was run with different versions or settings, or when
    ``speed_csv`` is missing or not a speed table.
    """
    import pandas as pd

    from optbench.report import step_cost
    from optbench.report.results import load

    dirs = [Path(d) for d in results_dirs]
    if not dirs:
        raise OptbenchError("no results folder given; pass the --out folder(s) of `optbench grid`")
    # read the speed table first, so that a bad --speed file fails before the grids are read
    if speed_csv is not None:
        speed_file = step_cost.find(dirs[0], speed_csv)
    else:
        speed_file = next((f for f in map(step_cost.find, dirs) if f is not None), None)
    speed = step_cost.read(speed_file).rows if speed_file is not None else None
    pooled = []
    for d in dirs:
        res = load(d)
        s = res.summary[res.summary["status"] != "skipped"].copy()
        if s.empty:
            continue
        s["task_settings"] = _task_settings(res, s)
        s["task_hash"] = [_task_hash(t, v, x) for t, v, x in zip(s["task"], s["task_version"], s["task_settings"])]
        s["_source"] = str(d)
        for k in ("optbench_version", "torch_version", "python_version", "git_commit"):
            s[k] = str(res.meta.get(k) or "")
        for task in s["task"].unique():
            info = res.task_info(task)
            s.loc[s["task"] == task, "target_metric"] = str(info.get("target_metric") or "loss")
            tv = info.get("target_value")
            s.loc[s["task"] == task, "target_value"] = math.nan if tv is None else float(tv)
        pooled.append(s)
    if not pooled:
        raise OptbenchError(f"no finished runs in {', '.join(map(str, dirs))}; run `optbench grid` first")
    summary = pd.concat(pooled, ignore_index=True).drop_duplicates("run_key", keep="first")
    _check_runs_comparable(summary)
    rows = _best_rows(summary)
    rows["optimizer_step_s"], rows["optimizer_step_set"] = _step_costs(rows, summary, speed)
    return finalize(rows)


def _task_settings(res, summary: "pd.DataFrame") -> list[str]:
    """Per run: canonical JSON of everything about its task that decides the numbers.

    The resolved task parameters and step count are in ``runs/<key>.json``
    (``config``); the target comes from meta.json.  The task's name and
    version are columns of their own.
    """
    out = []
    for key, task in zip(summary["run_key"], summary["task"]):
        info = res.task_info(task)
        config = _run_config(res.path, key)
        blob = {
            "params": config.get("task_params", info.get("defaults")),
            "steps": config.get("steps"),
            "target_metric": info.get("target_metric"),
            "target_value": info.get("target_value"),
        }
        out.append(json.dumps(blob, sort_keys=True, separators=(",", ":"), default=str))
    return out


def _task_hash(task: str, version: str, settings: str) -> str:
    return _sha(json.dumps([task, str(version), settings]))


def _settings_diff(a: str, b: str) -> str:
    """'steps 30 vs 60, params.w0 6.0 vs 5.0' between two task_settings cells."""
    def flat(text):
        try:
            d = json.loads(text.lstrip("'"))
        except ValueError:
            return {"settings": text}
        out = {}
        for k, v in (d.items() if isinstance(d, dict) else []):
            if isinstance(v, dict):
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[k] = v
        return out

    fa, fb = flat(a), flat(b)
    diffs = [f"{k} {fa.get(k, '(unset)')} vs {fb.get(k, '(unset)')}" for k in sorted(set(fa) | set(fb))
             if fa.get(k) != fb.get(k)]
    return ", ".join(diffs) or "same settings"


def _run_config(path: Path, key: str) -> dict:
    try:
        data = json.loads((path / "runs" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data.get("config") or {}


def _incomparable(task: str, a, b, where_a: str, where_b: str) -> str:
    if a["task_version"] != b["task_version"]:
        what = f"version {a['task_version']} in {where_a} vs version {b['task_version']} in {where_b}"
    else:
        what = f"{_settings_diff(a['task_settings'], b['task_settings'])} ({where_a} vs {where_b})"
    return f"task {task!r} differs: {what}"


def _check_runs_comparable(summary: "pd.DataFrame") -> None:
    for task, g in summary.groupby("task"):
        kinds = g.drop_duplicates(["task_version", "task_hash"])
        if len(kinds) > 1:
            a, b = kinds.iloc[0], kinds.iloc[1]
            raise OptbenchError(
                _incomparable(task, a, b, f"{a['_source']} run {a['run_key']}", f"{b['_source']} run {b['run_key']}")
                + "; a leaderboard compares one configuration per task: build one leaderboard per configuration"
            )


def _best_rows(summary: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    from optbench.report.results import SETTING, best_settings, settings_table

    settings = settings_table(summary)
    budget = settings.groupby(["task", "optimizer"]).agg(n_settings=("n_seeds", "size"), n_runs=("n_seeds", "sum"))
    best = best_settings(settings, ["task", "optimizer"]).merge(budget.reset_index(), on=["task", "optimizer"])
    # provenance of the best setting: its first run (all its seeds share the environment of one grid)
    first = summary.drop_duplicates(list(SETTING)).set_index(list(SETTING))
    prov_cols = ["task_version", "task_hash", "task_settings", "target_metric", "target_value", "optimizer_dist",
                 "optimizer_version", "optbench_version", "torch_version", "python_version", "device", "threads",
                 "git_commit"]
    prov = first.loc[pd.MultiIndex.from_frame(best[list(SETTING)]), prov_cols].reset_index(drop=True)
    rows = pd.concat([best.reset_index(drop=True), prov], axis=1)
    rows["config_hash"] = rows["config_hashes"].map(lambda s: _sha(s))
    return rows


def _log_size(x) -> float:
    """log of a positive size; NaN for anything else (missing, zero, negative)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return math.log(x) if x > 0 and math.isfinite(x) else math.nan


def _set_sizes(speed: "pd.DataFrame") -> dict[str, float]:
    """{param_set: log of its size in bytes} for the speed table's sets whose size is known."""
    import pandas as pd

    d = speed[speed["kind"] != "python"]  # the pure-Python rows step floats, not the set's tensors
    pb = pd.to_numeric(d["param_bytes"], errors="coerce") if "param_bytes" in d.columns else None
    size = 4.0 * d["n_params"].astype(float)  # the speed table times float32
    if pb is not None:
        size = pb.where(pb > 0, size)
    out = {}
    for ps, s in size.groupby(d["param_set"], sort=False):
        logs = [v for v in map(_log_size, s) if not math.isnan(v)]
        if logs:
            out[ps] = float(sorted(logs)[len(logs) // 2])
    return out


def _step_costs(rows: "pd.DataFrame", summary: "pd.DataFrame", speed) -> tuple[list[float], list[str]]:
    """Per row: (optimizer_step_s, optimizer_step_set) by the rule of the module docstring."""
    if speed is None:
        return [math.nan] * len(rows), [""] * len(rows)
    sets = _set_sizes(speed)
    task_size = {t: _log_size(g.median()) for t, g in summary.groupby("task")["param_bytes"]}
    ok = speed[(speed["kind"] == "optimizer") & speed["is_default"] & (speed["status"] == "ok")
               & (speed["median_s"] > 0)]
    # the first row of a (set, optimizer) when two tables were pasted together, as the report draws it
    median = {(ps, n): float(m) for ps, n, m in
              ok.drop_duplicates(["param_set", "name"])[["param_set", "name", "median_s"]].itertuples(index=False)}
    chosen = {}
    for task, size in task_size.items():
        if sets and not math.isnan(size):
            chosen[task] = min(sets, key=lambda ps: (abs(sets[ps] - size), sets[ps], ps))
    seconds, names = [], []
    for task, opt in zip(rows["task"], rows["optimizer"]):
        ps = chosen.get(task)
        m = median.get((ps, opt), math.nan) if ps is not None else math.nan
        seconds.append(m)
        names.append(ps if not math.isnan(m) else "")
    return seconds, names


def finalize(rows: "pd.DataFrame") -> "pd.DataFrame":
    """Rank within each task, compute the cross-task columns, neutralise text and sign each row.

    Used after building and after merging: both end with rows whose derived
    columns reflect exactly the rows present.
    """
    import pandas as pd

    df = rows.copy()
    df["schema_version"] = LEADERBOARD_SCHEMA_VERSION
    df = df.loc[_ranked_index(df, ["task"])].reset_index(drop=True)
    df["rank"] = df.groupby("task").cumcount() + 1
    for metric, ratio, score in (("time_to_target", "time_ratio", "cross_task_score"),
                                 ("steps_to_target", "steps_ratio", "cross_task_score_steps")):
        df[ratio], per_opt, n_tasks = _profile(df, metric)
        df[score] = df["optimizer"].map(per_opt).astype(float)
    # a task counts when somebody reached its target, which is the same for steps and time
    df["cross_task_tasks"] = n_tasks
    df = df.reindex(columns=list(COLUMNS))
    for c, kind in COLUMNS.items():
        if kind == "str":
            df[c] = df[c].map(_text).map(neutralise)
        elif kind == "int":
            df[c] = pd.to_numeric(df[c], errors="coerce").round().astype("Int64")
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["checksum"] = [row_checksum(cells) for cells in _cells(df)]
    return df


def _ranked_index(df: "pd.DataFrame", first=()) -> list:
    """Row order of the ranking rule (module docstring), after the ``first`` columns."""
    import numpy as np

    n = df["n_seeds"].astype(float)
    unfinished = (1.0 - df["n_ok"].astype(float) / n.where(n > 0)).fillna(1.0)
    key = df.assign(
        _u=unfinished, _s=df["score"].astype(float).fillna(np.inf),
        _t=df["time_to_target"].astype(float).fillna(np.inf), _p=df["time_per_step"].astype(float).fillna(np.inf),
    )
    return list(key.sort_values([*first, "_u", "_s", "_t", "_p", "optimizer"], kind="stable").index)


def _profile(df: "pd.DataFrame", metric: str):
    """(per-row ratio to the best on its task, {optimizer: score}, K) for one metric."""
    import numpy as np

    t = df[metric].astype(float).fillna(np.inf).to_numpy()
    best = df.assign(_t=t).groupby("task")["_t"].transform("min").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(t == best, 1.0, t / best)  # equal times (0 and 0 included) tie at 1
    scored = np.isfinite(best)  # tasks where somebody reached the target
    ratio = np.where(scored, ratio, np.nan)
    tasks = sorted(set(df.loc[scored, "task"]))
    k = len(tasks)
    contrib = np.clip((TAU_MAX - ratio) / (TAU_MAX - 1.0), 0.0, 1.0)
    contrib = np.where(np.isfinite(ratio), contrib, 0.0)
    per_opt = {}
    for opt in df["optimizer"].unique():
        mine = (df["optimizer"] == opt).to_numpy() & scored
        # a task without a row for this optimizer contributes 0, like a task it never solved
        per_opt[opt] = float(contrib[mine].sum() / k) if k else math.nan
    return ratio, per_opt, k


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# cells: text form, formula neutralisation, checksum


def _text(v) -> str:
    """A value as text, '' for every flavour of missing (None, NaN, pandas' NA)."""
    import pandas as pd

    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def neutralise(cell: str) -> str:
    """Prefix ``'`` to a text cell a spreadsheet would evaluate as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _format(v, kind: str) -> str:
    """A cell as written: shortest round-tripping float text, '' for missing."""
    if kind == "str":
        return _text(v)
    if _text(v) == "":
        return ""
    if kind == "int":
        return str(int(v))
    f = float(v)
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def _cells(df: "pd.DataFrame") -> list[list[str]]:
    """Every row as its list of written cells, in COLUMNS order (checksum included)."""
    cols = list(COLUMNS)
    data = [df[c].tolist() for c in cols]
    return [[_format(data[i][r], COLUMNS[c]) for i, c in enumerate(cols)] for r in range(len(df))]


def row_checksum(cells: list[str]) -> str:
    """Checksum of a row's written cells, every column but the checksum itself."""
    h = hashlib.sha256(_CHECKSUM_SALT)
    h.update("\x1f".join(cells[:-1]).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------
# files


def write_leaderboard(df: "pd.DataFrame", path) -> Path:
    """Write ``df`` (from :func:`build_leaderboard` or :func:`merge`) as CSV, signing every row."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise OptbenchError(f"not a leaderboard: missing column(s) {', '.join(missing)}; "
                            f"build it with optbench.leaderboard.build_leaderboard")
    df = df.copy()
    for c, kind in COLUMNS.items():
        if kind == "str":
            df[c] = df[c].map(_text).map(neutralise)
    rows = _cells(df)
    for cells in rows:
        cells[-1] = row_checksum(cells)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(COLUMNS))
        w.writerows(rows)
    tmp.replace(path)
    return path


def read_leaderboard(path) -> "pd.DataFrame":
    """Read a leaderboard CSV, checking its schema, every cell's type and every row's checksum.

    The returned frame has a ``_source`` column (``file:row``) for messages.
    """
    import pandas as pd

    path = Path(path)
    rebuild = f"rebuild it from its results folder with `optbench leaderboard RESULTS_DIR -o {path}`"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            table = list(csv.reader(f))
    except OSError as exc:
        raise OptbenchError(f"cannot read leaderboard {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise OptbenchError(f"{path} is not a leaderboard CSV ({exc}); {rebuild}") from None
    if not table:
        raise OptbenchError(f"{path} is empty; {rebuild}")
    header, body = table[0], table[1:]
    if header != list(COLUMNS):
        found = "unknown"
        if "schema_version" in header and body:
            found = body[0][header.index("schema_version")] if len(body[0]) == len(header) else "unknown"
        if found == "unknown":
            found = next((str(v) for v, cols in _OLD_HEADERS.items() if header == cols), found)
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        detail = "; ".join(x for x in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(extra)}" if extra else "",
            "columns out of order" if not missing and not extra else "") if x)
        if found == str(LEADERBOARD_SCHEMA_VERSION) or found == "unknown":
            raise OptbenchError(
                f"{path} does not have the columns of a leaderboard of schema {LEADERBOARD_SCHEMA_VERSION} "
                f"({detail}): it was edited or written by something else; {rebuild}"
            )
        raise OptbenchError(
            f"{path} is a leaderboard of schema {found}, this optbench reads schema {LEADERBOARD_SCHEMA_VERSION} "
            f"({detail}); {rebuild}"
        )
    records = []
    for i, cells in enumerate(body, start=2):  # line numbers as a spreadsheet shows them
        if not cells:
            continue
        where = f"{path} line {i}"
        if len(cells) != len(COLUMNS):
            raise OptbenchError(f"{where} has {len(cells)} cells, expected {len(COLUMNS)}; {rebuild}")
        row = dict(zip(COLUMNS, cells))
        if row["schema_version"] != str(LEADERBOARD_SCHEMA_VERSION):
            raise OptbenchError(
                f"{where} is leaderboard schema {row['schema_version']!r}, this optbench reads "
                f"{LEADERBOARD_SCHEMA_VERSION}; {rebuild}"
            )
        label = f"{where} (task {row['task']!r}, optimizer {row['optimizer']!r})"
        if row_checksum(cells) != row["checksum"]:
            raise OptbenchError(
                f"{label} fails its checksum: it was changed after optbench wrote it; {rebuild} instead of editing it"
            )
        parsed = {}
        for c, kind in COLUMNS.items():
            parsed[c] = _parse(row[c], kind, c, label, rebuild)
        parsed["_source"] = f"{path}:{i}"
        records.append(parsed)
    df = pd.DataFrame.from_records(records, columns=[*COLUMNS, "_source"])
    for c, kind in COLUMNS.items():
        if kind == "int":
            df[c] = df[c].astype("Int64")
        elif kind == "float":
            df[c] = df[c].astype(float)
    return df


def _parse(cell: str, kind: str, column: str, label: str, rebuild: str):
    if kind == "str":
        return cell
    if cell == "":
        if kind == "int" and column not in _NULLABLE_INT:
            raise OptbenchError(f"{label}: column {column} is empty, expected an integer; {rebuild}")
        return None if kind == "int" else math.nan
    if kind == "int":
        if not _INT.match(cell):
            raise OptbenchError(f"{label}: column {column} holds {cell!r}, expected an integer; {rebuild}")
        return int(cell)
    try:
        return float(cell)
    except ValueError:
        raise OptbenchError(f"{label}: column {column} holds {cell!r}, expected a number; {rebuild}") from None


def merge(paths: Iterable) -> "pd.DataFrame":
    """Merge leaderboard CSVs into one (then :func:`write_leaderboard` it).

    Every file is validated (columns, schema version, cell types, row
    checksums).  Rows for the same task must agree on the task's version and
    settings hash, or the merge is refused naming both rows.  A (task,
    optimizer) present in several files keeps its best row (by the ranking
    rule) and a :class:`LeaderboardWarning` names the rows left out.  Ranks and
    the cross-task columns are recomputed over the merged rows.
    """
    import pandas as pd

    paths = [Path(p) for p in paths]
    if len(paths) < 1:
        raise OptbenchError("nothing to merge; pass two or more leaderboard CSVs")
    df = pd.concat([read_leaderboard(p) for p in paths], ignore_index=True)
    if df.empty:
        raise OptbenchError(f"no rows in {', '.join(map(str, paths))}")
    for task, g in df.groupby("task", sort=True):
        kinds = g.drop_duplicates(["task_version", "task_hash"])
        if len(kinds) > 1:
            a, b = kinds.iloc[0], kinds.iloc[1]
            raise OptbenchError(
                f"cannot merge: {_incomparable(task, a, b, a['_source'], b['_source'])}; only rows of the same "
                f"task version and settings are comparable: re-run one grid to match the other"
            )
        devices = g.drop_duplicates(["device", "threads"])
        if len(devices) > 1:
            warnings.warn(
                f"task {task!r} mixes rows measured on different machines ({', '.join(sorted(set(devices['device'])))}"
                f"; threads {', '.join(sorted(set(map(str, devices['threads']))))}): its time ratios mean little, "
                f"compare cross_task_score_steps",
                LeaderboardWarning, stacklevel=2,
            )
    df = df.drop_duplicates([c for c in COLUMNS if c != "checksum"], keep="first")
    df = _keep_best_duplicates(df)
    return finalize(df.drop(columns=["_source"]))


def _keep_best_duplicates(df: "pd.DataFrame") -> "pd.DataFrame":
    """One row per (task, optimizer): the best by the ranking rule; a warning names the others."""
    ordered = df.loc[_ranked_index(df)]
    dup = ordered.duplicated(["task", "optimizer"], keep="first")
    for _, row in ordered[dup].iterrows():
        kept = ordered[(ordered["task"] == row["task"]) & (ordered["optimizer"] == row["optimizer"])].iloc[0]
        warnings.warn(
            f"task {row['task']!r}, optimizer {row['optimizer']!r} is in {kept['_source']} and {row['_source']}; "
            f"kept {kept['_source']} (better by the ranking rule), left out {row['_source']}",
            LeaderboardWarning, stacklevel=3,
        )
    return ordered[~dup]
