"""The results folder: atomic per-run files, then the consolidated tables.

Every finished run is one ``runs/<key>.json`` written to a temporary file,
fsynced and renamed into place, so a killed process leaves either the whole
file or none of it.  The tables are rebuilt from those files at the end of a
grid (and by ``optbench report``), which is why nothing finished is ever lost.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from optbench.schema import SCHEMA_VERSION, STEP_COLUMNS, SUMMARY_COLUMNS

DONE_STATUSES = frozenset({"ok", "diverged"})


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def run_path(out: Path, key: str) -> Path:
    return out / "runs" / f"{key}.json"


def write_run(out: Path, result: dict) -> None:
    atomic_write_text(run_path(out, result["summary"]["run_key"]), json.dumps(result))


def read_run(out: Path, key: str) -> dict | None:
    """The stored result for ``key``, or None if absent or unreadable (then it is re-run)."""
    p = run_path(out, key)
    try:
        data = json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if data.get("schema") != SCHEMA_VERSION:
        return None
    return data


def is_done(result: dict | None, retry_failed: bool = True) -> bool:
    if result is None:
        return False
    status = result["summary"].get("status")
    return status in DONE_STATUSES or (not retry_failed and status in ("failed", "timeout", "skipped"))


def write_tables(out: Path, results: list[dict]) -> dict[str, Path]:
    """runs.parquet and summary.csv from run results (pandas/pyarrow imported here only)."""
    import pandas as pd

    frames = []
    for r in results:
        cols = r["records"]
        if not cols or not cols.get("step"):
            continue
        df = pd.DataFrame(cols)
        df.insert(0, "run_key", r["summary"]["run_key"])
        frames.append(df)
    steps = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_key", *STEP_COLUMNS])
    summary = pd.DataFrame([r["summary"] for r in results])
    summary = summary.reindex(columns=list(SUMMARY_COLUMNS))
    paths = {"runs": out / "runs.parquet", "summary": out / "summary.csv"}
    tmp = paths["runs"].with_suffix(".parquet.tmp")
    steps.to_parquet(tmp, index=False)
    os.replace(tmp, paths["runs"])
    atomic_write_text(paths["summary"], summary.to_csv(index=False))
    return paths


def json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
