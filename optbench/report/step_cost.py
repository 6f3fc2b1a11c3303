"""The report's "Optimizer step cost" section, from the CSV ``optbench speed -o FILE`` writes.

The speed table is a separate measurement from the grid (one ``optimizer.step()``
timed by pytest-benchmark, see :mod:`optbench.speed`), so it is read from its
own file: ``RESULTS_DIR/speed_steps.csv`` when present, or the ``--speed`` file.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from optbench.errors import OptbenchError
from optbench.report import style
from optbench.report.figures import Figure
from optbench.report.tables import markdown, num
from optbench.speed import PARAM_SETS

#: the name ``optbench report`` looks for in a results folder
FILENAME = "speed_steps.csv"

#: the columns this section reads (a speed CSV has more; see optbench.speed)
REQUIRED = ("kind", "name", "variant", "is_default", "param_set", "n_params", "n_tensors", "status", "reason",
            "median_s", "iqr_s", "q1_s", "q3_s", "steps_per_s", "speedup_vs_forloop", "state_bytes_per_param",
            "device", "threads", "torch_version", "cpu")
TEXT = ("kind", "name", "variant", "is_default", "param_set", "status", "reason", "device", "torch_version", "cpu")

#: rows within a parameter set: optimizers (each one's variants together), then the reference rows
KIND_ORDER = ("optimizer", "clip", "python")
VARIANT_ORDER = ("fused", "foreach", "for-loop", "default", "-")
#: implementations told apart by hatching, since colour already means the optimizer
HATCHES = {"foreach": "////", "for-loop": "...."}
#: reference rows are not optimizers: grey, so they never borrow an optimizer's colour
REFERENCE_COLOURS = {"clip": "0.55", "python": "0.8"}
REFERENCE_LABELS = {"clip": "gradient clipping", "python": "pure-Python step"}


@dataclass
class StepCost:
    """A speed CSV, read and checked, and what the report wrote from it."""

    source: Path
    rows: pd.DataFrame
    figure: Figure | None = None
    tables: dict | None = None

    @property
    def paths(self) -> list[Path]:
        return ([self.figure.path] if self.figure else []) + list((self.tables or {}).values())


# ---------------------------------------------------------------------------
# reading


def find(results_dir: Path, speed_csv=None) -> Path | None:
    """The speed CSV to report: ``speed_csv`` (which must exist), else ``results_dir/speed_steps.csv`` if any."""
    if speed_csv is None:
        auto = Path(results_dir) / FILENAME
        return auto if auto.is_file() else None
    path = Path(speed_csv)
    if not path.is_file():
        raise OptbenchError(f"speed table {path} not found; write it with `optbench speed -o {path}`")
    return path


def read(path: Path) -> StepCost:
    """Load a speed CSV; one-line OptbenchError when it is not one."""
    try:
        # as in results.py: only an empty cell is missing (an optimizer may be called "NA")
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise _not_a_speed_table(path, f"it cannot be read as CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise _not_a_speed_table(path, f"it lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise _not_a_speed_table(path, "it has no rows")
    for c in TEXT:
        df[c] = df[c].fillna("")
    for c in REQUIRED:
        if c not in TEXT:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["is_default"] = df["is_default"].str.lower() == "true"
    return StepCost(path, df)


def _not_a_speed_table(path: Path, why: str) -> OptbenchError:
    # FILE, not this path: the file may be something else the user keeps (a summary.csv passed by mistake)
    return OptbenchError(f"{path} is not a speed table of this optbench: {why}; "
                         f"pass the CSV that `optbench speed -o FILE` writes")


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Table order: parameter set, then optimizers by name with their variants together, then references."""
    def rank(values, order):
        return values.map(lambda v: order.index(v) if v in order else len(order))

    key = df.assign(_ps=rank(df["param_set"], PARAM_SETS), _k=rank(df["kind"], KIND_ORDER),
                    _v=rank(df["variant"], VARIANT_ORDER))
    key = key.sort_values(["_ps", "param_set", "_k", "name", "_v", "variant"], kind="stable")
    return df.loc[key.index].reset_index(drop=True)


def param_sets(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(ordered(df)["param_set"]))


# ---------------------------------------------------------------------------
# the figure


def bar_label(row) -> str:
    """``adamw · fused *`` (the star: what the plugin's defaults run); a single-implementation row by its name."""
    if row["variant"] in ("default", "-", ""):
        return row["name"]
    return f"{row['name']} · {row['variant']}" + (" *" if row["is_default"] else "")


def bar_colour(row, palette: dict):
    return palette[row["name"]] if row["kind"] == "optimizer" else REFERENCE_COLOURS.get(row["kind"], "0.55")


def set_title(df: pd.DataFrame, ps: str) -> str:
    """``synthetic-10m (9,849,600 parameters in 50 tensors)`` from the set's rows."""
    d = df[(df["param_set"] == ps) & (df["kind"] != "python") & np.isfinite(df["n_params"])]
    if d.empty:
        return ps
    n, t = int(d["n_params"].iloc[0]), int(d["n_tensors"].fillna(0).iloc[0])
    return f"{ps} ({n:,} parameter{'s' * (n != 1)} in {t} tensor{'s' * (t != 1)})"


def figure(sc: StepCost, out: Path, palette: dict) -> Figure | None:
    """figures/step_cost.png: median seconds per step with the IQR, one panel per parameter set."""
    ok = ordered(sc.rows[(sc.rows["status"] == "ok") & (sc.rows["median_s"] > 0)])
    # one bar per case even if the CSV repeats one (two tables pasted together)
    ok = ok.drop_duplicates(["param_set", "kind", "name", "variant"]).reset_index(drop=True)
    if ok.empty:
        return None
    sets = param_sets(ok)
    counts = [int((ok["param_set"] == ps).sum()) for ps in sets]
    # panel height follows its bar count, so a bar is as thick in every panel
    heights = [0.19 * n + 0.75 for n in counts]
    with style.theme():
        fig, axes = style.new_figure(len(sets), 1, width=6.2, height=float(np.mean(heights)),
                                     height_ratios=heights)
        for ax, ps in zip(axes[:, 0], sets):
            _panel(ax, ok[ok["param_set"] == ps].reset_index(drop=True), palette)
            ax.set_title(set_title(sc.rows, ps), loc="left", fontweight="bold")
        axes[-1, 0].set_xlabel("seconds per optimizer step (median over rounds, IQR bars; log scale)")
        handles, labels, headings = _legend(ok, palette)
        legend = fig.legend(handles, labels, loc="outside right center", frameon=False)
        for i in headings:
            legend.get_texts()[i].set_fontweight("bold")
        style.title(fig, "Cost of one optimizer step, by optimizer and implementation")
        path = style.save(fig, out / "step_cost.png")
    return Figure(
        "Optimizer step cost", "Seconds per optimizer step", path,
        "One `optimizer.step()` with the gradients already in place, one panel per parameter set: the bar is "
        "the median over pytest-benchmark's rounds, the error bar the interquartile range, the label its median. "
        "Colour: the optimizer; hatching: the implementation; * marks the implementation the plugin's defaults "
        "run. Grey rows are references: gradient clipping and a step in pure Python on floats.",
    )


def _panel(ax, d: pd.DataFrame, palette: dict) -> None:
    y = np.arange(len(d))
    med, q1, q3 = (d[c].to_numpy(dtype=float) for c in ("median_s", "q1_s", "q3_s"))
    has = np.isfinite(q1) & np.isfinite(q3)
    right = np.where(has, q3, med)
    # whole decades, with room for the shortest bar to show and for the labels on the right
    lo = 10 ** math.floor(math.log10(np.nanmin(np.where(has, np.minimum(q1, med), med)) / 2))
    hi = 10 ** math.ceil(math.log10(np.nanmax(right) * 8))
    # matplotlib's barh rather than seaborn's barplot: seaborn's bars start at 0, which a log axis
    # cannot draw; these start at the panel's left edge
    ax.barh(y, med - lo, left=lo, height=0.75, color=[bar_colour(r, palette) for _, r in d.iterrows()],
            hatch=[HATCHES.get(v) for v in d["variant"]], edgecolor="white", linewidth=0.5)
    ax.errorbar(med[has], y[has], xerr=[np.maximum(med - q1, 0)[has], np.maximum(q3 - med, 0)[has]],
                fmt="none", ecolor="0.2", elinewidth=0.9, capsize=2)
    for yi, r, m in zip(y, right, med):
        ax.text(r * 1.2, yi, seconds(m), va="center", ha="left", fontsize=7, color="0.25")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(y, [bar_label(r) for _, r in d.iterrows()])
    ax.set_ylim(len(d) - 0.5, -0.5)  # first row on top, as in the table
    ax.grid(axis="y", visible=False)


def _legend(ok: pd.DataFrame, palette: dict):
    from matplotlib.patches import Patch

    def heading(text):  # a legend row without a swatch, to group the rows below it
        headings.append(len(labels))
        handles.append(Patch(visible=False))
        labels.append(text)

    handles, labels, headings = [], [], []
    opt = ok[ok["kind"] == "optimizer"]
    for name in sorted(set(opt["name"])):
        handles.append(Patch(facecolor=palette[name]))
        labels.append(name)
    variants = [v for v in ("fused", "foreach", "for-loop") if v in set(opt["variant"])]
    if variants:
        heading("implementation")
        for v in variants:
            hatch = HATCHES.get(v)
            # hatches drawn dark on white: in an optimizer's colour they would suggest that optimizer
            handles.append(Patch(facecolor="white" if hatch else "0.3", edgecolor="0.3", hatch=hatch,
                                 linewidth=0.5))
            labels.append(v)
    kinds = [k for k in REFERENCE_LABELS if k in set(ok["kind"])]
    if kinds:
        heading("reference")
        for kind in kinds:
            handles.append(Patch(facecolor=REFERENCE_COLOURS[kind]))
            labels.append(REFERENCE_LABELS[kind])
    return handles, labels, headings


# ---------------------------------------------------------------------------
# tables


def seconds(s: float) -> str:
    """``29.4 µs``: a step time in the unit that reads best."""
    if not np.isfinite(s):
        return "–"
    for unit, f in (("s", 1.0), ("ms", 1e3), ("µs", 1e6)):
        if s * f >= 1:
            return f"{s * f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def _us(x: float) -> str:
    """Microseconds with 3 significant digits, thousands separated rather than in exponent form."""
    if not np.isfinite(x):
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def variant_text(row) -> str:
    if row["kind"] != "optimizer":
        return f"{row['kind']} (reference)"
    return row["variant"] + (" *" if row["is_default"] else "")


def display(df: pd.DataFrame, with_set: bool = True) -> pd.DataFrame:
    """The timed rows, formatted for reading, in table order."""
    d = ordered(df[df["status"] == "ok"])
    out = pd.DataFrame({
        "optimizer": d["name"],
        "variant": [variant_text(r) for _, r in d.iterrows()],
        "param set": d["param_set"],
        "median ± IQR (µs)": [f"{_us(m * 1e6)} ± {_us(i * 1e6)}" if np.isfinite(i) else _us(m * 1e6)
                              for m, i in zip(d["median_s"], d["iqr_s"])],
        "steps/s": [f"{v:,.0f}" if v >= 100 else num(v) for v in d["steps_per_s"]],
        "vs for-loop": ["–" if not np.isfinite(v) else f"{v:.2f}×" for v in d["speedup_vs_forloop"]],
        "state bytes/param": [num(v) for v in d["state_bytes_per_param"]],
    })
    return out if with_set else out.drop(columns=["param set"])


#: display columns aligned right
RIGHT = ("median ± IQR (µs)", "steps/s", "vs for-loop", "state bytes/param")


def not_timed(df: pd.DataFrame) -> pd.DataFrame:
    d = ordered(df[df["status"] != "ok"])
    return pd.DataFrame({"status": d["status"], "param set": d["param_set"], "name": d["name"],
                         "variant": d["variant"], "reason": d["reason"]})


def environment(df: pd.DataFrame) -> str:
    """``cpu (AMD EPYC, 2 threads), torch 2.13.0+cpu``; a column with several values lists them all."""
    def values(col) -> str:
        v = [str(x).removesuffix(".0") for x in dict.fromkeys(df[col]) if str(x) not in ("", "nan")]
        return " / ".join(v) or "?"

    return (f"{values('device')} ({values('cpu')}, {values('threads')} threads), "
            f"torch {values('torch_version')}")


#: how the steps were timed, in the page's and the table's words
TIMING = ("Timing is pytest-benchmark's: the median over calibrated rounds (each round a calibrated number of "
          "steps, rounds until the time budget), with the interquartile range over rounds.")
#: never at the start of a line: Markdown would read "* ..." as a list item
LEGEND = ("Variants marked * are the ones the plugin's defaults run; vs for-loop is the same optimizer's "
          "for-loop median divided by this one.")


def write_tables(sc: StepCost, out: Path) -> dict[str, Path]:
    """tables/step_cost.csv (the rows as read, timed or not) and tables/step_cost.md (for reading)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"step_cost.csv": out / "step_cost.csv", "step_cost.md": out / "step_cost.md"}
    if paths["step_cost.csv"].resolve() != sc.source.resolve():
        shutil.copyfile(sc.source, paths["step_cost.csv"])
    intro = (f"One `optimizer.step()` with gradients in place, from `{sc.source}`, on {environment(sc.rows)}. "
             f"{TIMING} {LEGEND}")
    md = ["# Optimizer step cost", "", intro, ""]
    timed = display(sc.rows)
    if not timed.empty:
        md += [markdown(timed, {c: "right" for c in RIGHT}), ""]
    bad = not_timed(sc.rows)
    if not bad.empty:
        md += ["Not timed:", ""]
        md += [f"- {r['param set']} {r['name']}" + (f" [{r['variant']}]" if r["variant"] not in ("-", "") else "")
               + f": {r['status']}" + (f", {r['reason']}" if r["reason"] else "") for _, r in bad.iterrows()]
        md.append("")
    paths["step_cost.md"].write_text("\n".join(md), encoding="utf-8")
    return paths
