"""Convergence and speed tables: full-precision CSV for analysis, Markdown for reading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from optbench.report import style
from optbench.report.results import SETTING, Results

#: settings per task shown on the report page; the full tables are linked
PAGE_ROWS = 12


# ---------------------------------------------------------------------------
# formatting


def num(x, digits: int = 3) -> str:
    """A number for people: 3 significant digits, '–' when missing, 'never' for +inf."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    x = float(x)
    if math.isinf(x):
        return "never" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def mean_ci(mean, ci) -> str:
    """``mean ± ci`` (the CI is dropped when it could not be estimated, e.g. one seed)."""
    m = num(mean)
    if m in ("–", "never") or ci is None or not np.isfinite(ci):
        return m
    return f"{m} ± {num(ci, 2)}"


def bytes_text(x) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    div, unit = style.byte_unit(float(x))
    return f"{float(x) / div:.3g} {unit}"


def markdown(df: pd.DataFrame, align: dict | None = None) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    align = align or {}
    cols = list(df.columns)

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "| " + " | ".join("---:" if align.get(c) == "right" else "---" for c in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# tables


def convergence_table(res: Results, settings: pd.DataFrame) -> pd.DataFrame:
    """convergence.csv with each setting's ``lr`` and ``rank`` within its task, best first."""
    ranked = settings[[*SETTING, "lr"]].copy()
    ranked["rank"] = ranked.groupby("task").cumcount() + 1
    # seeds that reached the target, counted the same way as the leaderboard counts them
    ranked["reached"] = (settings["reached_target"] * settings["n_seeds"]).round().astype(int)
    conv = res.convergence.drop(columns=["lr", "rank", "reached"], errors="ignore")
    conv = conv.merge(ranked, on=list(SETTING), how="left")
    conv = conv.sort_values(["task", "rank"], na_position="last", kind="stable").reset_index(drop=True)
    first = ["task", "rank", "optimizer", "hparams", "lr", "scheduler", "grad_mode", "clip"]
    return conv[first + [c for c in conv.columns if c not in first]]


def convergence_display(res: Results, conv: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's convergence table, formatted for reading."""
    c = conv[conv["task"] == task]
    metric = res.target_metric(task)
    n = c["n_seeds"].astype(int)
    reached = c["reached"]
    return pd.DataFrame({
        "rank": c["rank"].map(lambda r: "–" if pd.isna(r) else str(int(r))),
        "optimizer": c["optimizer"],
        "setting": [style.setting_label(h, g, cl) for h, g, cl in zip(c["hparams"], c["grad_mode"], c["clip"])],
        "scheduler": c["scheduler"],
        f"final {metric}": [mean_ci(m, ci) for m, ci in zip(c["final_target_metric_mean"],
                                                              c["final_target_metric_ci95"])],
        "best loss": [mean_ci(m, ci) for m, ci in zip(c["best_loss_mean"], c["best_loss_ci95"])],
        "steps to target": [f"{mean_ci(m, ci)} ({int(r)}/{k})" if r else "never"
                            for m, ci, r, k in zip(c["steps_to_target_mean"], c["steps_to_target_ci95"],
                                                   reached.fillna(0), n)],
        "time to target (s)": [mean_ci(m, ci) if r else "never" for m, ci, r in
                               zip(c["time_to_target_mean"], c["time_to_target_ci95"], reached.fillna(0))],
        "diverged": [f"{round(d * k)}/{k}" for d, k in zip(c["divergence_rate"].fillna(0), n)],
    })


def speed_table(res: Results) -> pd.DataFrame:
    conv_first = ["task", "optimizer", "hparams", "scheduler", "grad_mode", "clip"]
    s = res.speed.sort_values(conv_first, kind="stable").reset_index(drop=True)
    return s[conv_first + [c for c in s.columns if c not in conv_first]]


def speed_display(speed: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
    s = speed if task is None else speed[speed["task"] == task]
    out = pd.DataFrame({
        "task": s["task"],
        "optimizer": s["optimizer"],
        "setting": [style.setting_label(h, g, cl, sc) for h, g, cl, sc in
                    zip(s["hparams"], s["grad_mode"], s["clip"], s["scheduler"])],
        "time/step (ms)": [mean_ci(m * 1e3, ci * 1e3) for m, ci in
                           zip(s["time_per_step_mean"], s["time_per_step_ci95"])],
        "total (s)": [mean_ci(m, ci) for m, ci in zip(s["total_time_mean"], s["total_time_ci95"])],
        "tokens/s": [mean_ci(m, ci) if m and np.isfinite(m) and m > 0 else "–"
                     for m, ci in zip(s["tokens_per_s_mean"], s["tokens_per_s_ci95"])],
        "of fp32 peak": [f"{m:.1%}" if np.isfinite(m) and m > 0 else "–" for m in s["frac_of_peak_mean"]],
        "optimizer state": [bytes_text(m) for m in s["opt_state_bytes_mean"]],
        "peak memory": [bytes_text(m) for m in s["peak_mem_bytes_mean"]],
    })
    return out if task is None else out.drop(columns=["task"])


def speed_summary(res: Results) -> pd.DataFrame:
    """Per task and optimizer, over finished plain-loop runs (what the speed figure shows)."""
    from optbench.report.stats import ci95_halfwidth

    s = res.summary[res.summary["status"] == "ok"]
    plain = s[s["grad_mode"] == "zero"]
    s = pd.concat([plain, s[~s["task"].isin(plain["task"])]])
    if s.empty:
        return pd.DataFrame()
    g = s.groupby(["task", "optimizer"], sort=True)
    t = g["time_per_step"]
    out = pd.DataFrame({
        "runs": g.size(),
        "time/step (ms)": [mean_ci(m * 1e3, ci * 1e3) for m, ci in zip(t.mean(), t.agg(ci95_halfwidth))],
        "tokens/s": [num(v) if v and np.isfinite(v) and v > 0 else "–" for v in g["tokens_per_s"].mean()],
        "optimizer state": [bytes_text(v) for v in g["opt_state_bytes"].mean()],
        "peak memory": [bytes_text(v) for v in g["peak_mem_bytes"].max()],
    })
    return out.reset_index()


def attempted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of an aggregate table with at least one run that was not skipped.

    A setting whose every run was skipped (its data unreachable, its optimizer
    unable to run the task) has nothing to rank or time; the report page lists
    such runs with their reasons instead.
    """
    ran = (df["n_ok"] > 0) | (df["divergence_rate"].fillna(0) > 0)
    if "failed" in df:
        ran |= df["failed"].fillna(0) > 0
    return df[ran]


def write_tables(res: Results, settings: pd.DataFrame, out: Path) -> dict[str, Path]:
    """tables/convergence.{csv,md} and tables/speed.{csv,md}; returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    conv = attempted(convergence_table(res, settings))
    speed = attempted(speed_table(res))
    paths = {"convergence.csv": out / "convergence.csv", "speed.csv": out / "speed.csv",
             "convergence.md": out / "convergence.md", "speed.md": out / "speed.md"}
    conv.to_csv(paths["convergence.csv"], index=False)
    speed.to_csv(paths["speed.csv"], index=False)
    md = ["# Convergence", "",
          "Mean ± half-width of the 95 % t-interval over the seeds that finished; settings ranked by "
          "unfinished seeds, then final target metric, then time to target.", ""]
    for task in res.tasks:
        if task in set(conv["task"]):
            md += [f"## {task}", "", markdown(convergence_display(res, conv, task)), ""]
    paths["convergence.md"].write_text("\n".join(md))
    md = ["# Speed", "", "Mean ± half-width of the 95 % t-interval over the seeds that finished.", ""]
    for task in res.tasks:
        if task in set(speed["task"]):
            md += [f"## {task}", "", markdown(speed_display(speed, task)), ""]
    paths["speed.md"].write_text("\n".join(md))
    return paths
