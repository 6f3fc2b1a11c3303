"""The results folder: atomic per-run files, then the consolidated tables.

Every finished run is one ``runs/<key>.json`` written to a temporary file and
renamed into place, so a killed process leaves either the whole file or none
of it.  Run files are not fsynced (that cost 3-8 ms a run here, most of the
per-run budget): after an OS crash a file may be empty or cut short, and
``read_run`` treats such a file as absent, so that run is simply done again.
The tables are rebuilt from all those files at the end of every grid, so
after a killed grid the same command again (which runs only what is missing)
restores them; nothing finished is ever lost.

Writing needs no pandas (~0.4 s to import): ``records_csv`` writes CSV as
``DataFrame.to_csv`` would, and ``runs.parquet`` is built with pyarrow alone.
"""

from __future__ import annotations

import array
import csv
import io
import json
import math
import numbers
import os
import tempfile
from pathlib import Path

from optbench.schema import SCHEMA_VERSION, STEP_COLUMNS, SUMMARY_COLUMNS

DONE_STATUSES = frozenset({"ok", "diverged"})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp creates files 0600; results are meant to be shared (a cluster
#: group, a web server), so give them the mode a plain open() would.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if fsync:
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
    # no fsync: see the module docstring (a torn file after an OS crash is re-run, never misread)
    atomic_write_text(run_path(out, result["summary"]["run_key"]), json.dumps(result), fsync=False)


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


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _is_bool(v) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"  # numpy.bool_ without importing numpy


def _column_formatter(values: list):
    """How pandas' ``to_csv`` would print this column, from the dtype it would infer."""
    present = [v for v in values if not _missing(v)]
    if present and all(_is_bool(v) for v in present):
        return lambda v: "" if _missing(v) else str(bool(v))
    if all(isinstance(v, numbers.Real) and not _is_bool(v) for v in present):
        if len(present) == len(values) and all(isinstance(v, numbers.Integral) for v in present):
            return str  # an int64 column
        return lambda v: "" if _missing(v) else repr(float(v))  # float64: shortest round-trip repr, NaN empty
    return lambda v: "" if _missing(v) else str(v)  # object column


def records_csv(records: list[dict], columns=None) -> str:
    """CSV text of ``records`` as ``pandas.DataFrame(records).to_csv(index=False)`` writes it.

    Same column inference (int, float with NaN as an empty field, bool,
    object), same float format (shortest round-trip repr) and quoting, without
    importing pandas (~0.4 s).  ``columns`` selects and orders the columns
    (missing ones empty), like ``DataFrame.reindex(columns=...)``.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in records for k in r))
    if not columns:
        return "\n"
    cols = {c: [r.get(c) for r in records] for c in columns}
    fmts = {c: _column_formatter(v) for c, v in cols.items()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for i in range(len(records)):
        w.writerow([fmts[c](cols[c][i]) for c in columns])
    return buf.getvalue()


def steps_table(results: list[dict]):
    """All per-step records as one pyarrow Table: ``run_key`` then every record column
    (union over runs in order of appearance; absent values and NaN are null, as
    ``DataFrame.to_parquet`` stores them)."""
    import pyarrow as pa

    runs = [(r["summary"]["run_key"], r["records"]) for r in results if r["records"] and r["records"].get("step")]
    names = list(dict.fromkeys(["run_key", *STEP_COLUMNS, *(k for _, cols in runs for k in cols)]))
    data: dict[str, list] = {n: [] for n in names}
    for key, cols in runs:
        n = len(cols["step"])
        data["run_key"].extend([key] * n)
        for name in names[1:]:
            data[name].extend(cols.get(name) or [None] * n)
    if not runs:
        data = {"run_key": [], "step": [], **{c: [] for c in STEP_COLUMNS[1:]}}
    return pa.Table.from_arrays([_arrow_array(v) for v in data.values()], names=list(data))


def _arrow_array(values: list):
    """A pyarrow Array of plain Python values, built from buffers.

    ``pa.array`` would do, but its first call imports pandas (~0.4 s) to check
    whether the input is a pandas object.  Types follow pandas: bool, int64
    (no missing values), float64 (missing and NaN as null), string; anything
    else goes to ``pa.array``.
    """
    import pyarrow as pa

    n = len(values)
    types = set(map(type, values))
    if types <= {float}:  # the common case, at C speed: per-step losses, norms, times
        nans = [i for i, v in enumerate(values) if v != v]
        return _from_buffers(pa.float64(), n, nans, array.array("d", values))
    if types <= {int} and n:
        try:
            return _from_buffers(pa.int64(), n, [], array.array("q", values))
        except OverflowError:  # beyond int64: stored as float64, as pandas would
            pass
    missing = [i for i, v in enumerate(values) if _missing(v)]
    hole = set(missing)
    present = [v for i, v in enumerate(values) if i not in hole] if missing else values
    if present and all(_is_bool(v) for v in present):
        bits = bytearray((n + 7) // 8)
        for i, v in enumerate(values):
            if v and i not in hole:
                bits[i >> 3] |= 1 << (i & 7)
        return _from_buffers(pa.bool_(), n, missing, bits)
    if all(isinstance(v, numbers.Real) and not _is_bool(v) for v in present):
        if not missing and all(isinstance(v, numbers.Integral) for v in present) and present:
            try:
                return _from_buffers(pa.int64(), n, [], array.array("q", [int(v) for v in values]))
            except OverflowError:
                pass
        data = array.array("d", [0.0 if i in hole else float(v) for i, v in enumerate(values)])
        return _from_buffers(pa.float64(), n, missing, data)
    if all(isinstance(v, str) for v in present):
        encoded = [b"" if i in hole else v.encode() for i, v in enumerate(values)]
        offsets = [0]
        for e in encoded:
            offsets.append(offsets[-1] + len(e))
        large = offsets[-1] >= 2**31
        return _from_buffers(pa.large_string() if large else pa.string(), n, missing,
                             array.array("q" if large else "i", offsets), b"".join(encoded))
    return pa.array([None if i in hole else v for i, v in enumerate(values)])


def _from_buffers(typ, n: int, missing: list[int], *buffers):
    """pa.Array.from_buffers with a validity bitmap that clears the ``missing`` positions."""
    import pyarrow as pa

    validity = None
    if missing:
        bits = bytearray(b"\xff" * ((n + 7) // 8))
        for i in missing:
            bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        validity = pa.py_buffer(bytes(bits))
    bufs = [pa.py_buffer(b.tobytes() if isinstance(b, array.array) else bytes(b)) for b in buffers]
    return pa.Array.from_buffers(typ, n, [validity, *bufs], len(missing))


def write_tables(out: Path, results: list[dict]) -> dict[str, Path]:
    """runs.parquet and summary.csv from run results (pyarrow imported here only; no pandas)."""
    import pyarrow.parquet as pq

    paths = {"runs": out / "runs.parquet", "summary": out / "summary.csv"}
    tmp = paths["runs"].with_suffix(".parquet.tmp")
    pq.write_table(steps_table(results), tmp)
    os.replace(tmp, paths["runs"])
    atomic_write_text(paths["summary"], records_csv([r["summary"] for r in results], list(SUMMARY_COLUMNS)))
    return paths


def json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
