"""report.md and report.html from one list of blocks.

Both pages reference the figures by relative path and embed no script, font
or stylesheet from anywhere: they open from a USB stick on a plane.  The HTML
carries its small stylesheet inline.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from optbench.report import step_cost as SC
from optbench.report import tables as T
from optbench.report.figures import Figure
from optbench.report.results import Results

#: section order of the page; figures of other sections go last
SECTIONS = ("Loss curves", "Learning-rate sensitivity", "Gradient clipping", "Gradient modes", "Speed")


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    """One paragraph; `code` and [text](relative link) are the only markup."""

    text: str


@dataclass
class Table:
    df: pd.DataFrame
    right: tuple = ()  # columns aligned right (numbers)


@dataclass
class Image:
    src: str  # relative to the page
    alt: str
    caption: str


# ---------------------------------------------------------------------------
# content


def blocks(res: Results, settings: pd.DataFrame, figures: list[Figure], table_paths: dict, leaderboard,
           out: Path, step_cost: SC.StepCost | None = None) -> list:
    """The page's content, best first: what won, then the evidence, then the fine print.

    ``step_cost``: the speed CSV's :class:`~optbench.report.step_cost.StepCost` (its section follows
    "Speed"), or None.
    """
    meta = res.meta
    s = res.summary
    counts = s["status"].value_counts()
    status = ", ".join(f"{counts[k]} {k}" for k in ("ok", "diverged", "failed", "timeout", "skipped") if k in counts)
    grid = (meta.get("grid") or {}).get("name", "")
    b: list = [Heading(f"optbench report{': ' + grid if grid else ''}", 1)]
    b.append(Para(
        f"{len(s)} runs ({status}) of {len(res.tasks)} task(s) and {len(res.optimizers)} optimizer(s) from "
        f"`{res.path}`. optbench {meta.get('optbench_version', '?')}, torch {meta.get('torch_version', '?')}, "
        f"Python {meta.get('python_version', '?')} on {meta.get('device', '?')} ({meta.get('cpu', '?')}, "
        f"{meta.get('threads', '?')} threads)"
        + (f", commit `{str(meta['git_commit'])[:12]}`" if meta.get("git_commit") else "")
        + f". Report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    ))
    b += _leaderboard_blocks(res, leaderboard, out)
    by_section: dict[str, list[Figure]] = {}
    for f in figures:
        by_section.setdefault(f.section, []).append(f)
    for section in [*SECTIONS, *sorted(set(by_section) - set(SECTIONS))]:
        figs = by_section.get(section)
        if figs:
            b += _section(section, figs, res, table_paths, out)
        if section == "Speed" and step_cost is not None:
            # next to the grid's time per step, of which the optimizer's step is one part
            b += _step_cost_blocks(step_cost, out)
    b += _convergence_blocks(res, settings, table_paths, out)
    b += _problem_blocks(res)
    b += _provenance_blocks(res)
    return b


def _section(section: str, figs: list[Figure], res: Results, table_paths: dict, out: Path) -> list:
    b: list = [Heading(section)]
    for f in figs:
        b.append(_image(f, out))
    if section == "Speed":
        summary = T.speed_summary(res)
        if not summary.empty:
            b.append(Table(summary, right=("runs", "time/step (ms)", "tokens/s", "optimizer state",
                                           "peak memory")))
            b.append(Para(f"Per setting: [speed.md]({_rel(table_paths['speed.md'], out)}), "
                          f"[speed.csv]({_rel(table_paths['speed.csv'], out)})."))
    return b


def _image(f: Figure, out: Path) -> Image:
    return Image(_rel(f.path, out), f.title, f"{f.title}. {f.caption}")


def _step_cost_blocks(sc: SC.StepCost, out: Path) -> list:
    """The speed CSV's section: figure, one table per parameter set, what was not timed."""
    b: list = [Heading("Optimizer step cost")]
    b.append(Para(
        f"What one `optimizer.step()` costs with the gradients already in place, measured apart from the grid "
        f"by `optbench speed` (`{sc.source}`) on {SC.environment(sc.rows)}. {SC.TIMING} "
        f"Full tables: [step_cost.md]({_rel(sc.tables['step_cost.md'], out)}), "
        f"[step_cost.csv]({_rel(sc.tables['step_cost.csv'], out)})."
    ))
    if sc.figure is not None:
        b.append(_image(sc.figure, out))
    timed = sc.rows[sc.rows["status"] == "ok"]
    for ps in SC.param_sets(timed):
        d = SC.display(timed[timed["param_set"] == ps], with_set=False)
        b.append(Heading(SC.set_title(sc.rows, ps), 3))
        b.append(Table(d.head(T.PAGE_ROWS), right=SC.RIGHT))
        if len(d) > T.PAGE_ROWS:
            b.append(Para(f"… and {len(d) - T.PAGE_ROWS} more rows in the full table."))
    if not timed.empty:
        b.append(Para(SC.LEGEND))
    bad = SC.not_timed(sc.rows)
    if not bad.empty:
        b.append(Para("Not timed:"))
        b.append(Table(bad))
    return b


def _rel(path: Path, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve()).as_posix()


def _leaderboard_blocks(res: Results, lb, out: Path) -> list:
    if lb is None or lb.empty:
        return []
    b: list = [Heading("Leaderboard")]
    b.append(Para(
        "Each optimizer's best setting per task (fewest unfinished seeds, then lowest mean final target metric, "
        "then time to target), with the number of settings it was tuned over. Score: mean ± 95 % CI over seeds "
        "of the target metric at the last step. Times and steps to target are medians over seeds "
        "(\"never\" when fewer than half reach it)."
        + (f" Full table with provenance: [leaderboard.csv]({_rel(out / 'leaderboard.csv', out)})."
           if (out / "leaderboard.csv").exists() else "")
    ))
    cross = lb.drop_duplicates("optimizer")[["optimizer", "cross_task_score", "cross_task_score_steps",
                                              "cross_task_tasks"]]
    if cross["cross_task_tasks"].fillna(0).max() > 0:
        cross = cross.sort_values(["cross_task_score", "cross_task_score_steps"], ascending=False)
        b.append(Table(pd.DataFrame({
            "optimizer": cross["optimizer"],
            "cross-task score (time)": cross["cross_task_score"].map(lambda v: T.num(v)),
            "cross-task score (steps)": cross["cross_task_score_steps"].map(lambda v: T.num(v)),
            "tasks": cross["cross_task_tasks"].astype(str),
        }), right=("cross-task score (time)", "cross-task score (steps)", "tasks")))
        b.append(Para(
            "Cross-task score, after AlgoPerf: on every task where some optimizer reaches the target, the ratio "
            "r of an optimizer's time (or steps) to target to the best one's; the score is the mean over those "
            "tasks of clip((4 - r) / 3, 0, 1), the normalised area under its performance profile up to r = 4. "
            "1 = fastest everywhere; 0 = never within 4x of the fastest."
        ))
    else:
        b.append(Para("No optimizer reached a task's target, so there is no cross-task score "
                      "(set the tasks' `target_value` or run more steps)."))
    for task in sorted(lb["task"].unique()):
        t = lb[lb["task"] == task]
        first = t.iloc[0]
        target = (f"target {first['target_metric']} ≤ {T.num(first['target_value'])}"
                  if pd.notna(first["target_value"]) else "no target set")
        b.append(Heading(f"{task} ({target})", 3))
        b.append(Table(pd.DataFrame({
            "rank": t["rank"].astype(str),
            "optimizer": t["optimizer"],
            "best setting": [_setting(r) for _, r in t.iterrows()],
            f"final {first['target_metric']}": [T.mean_ci(m, c) for m, c in zip(t["score"], t["score_ci95"])],
            "steps to target": t["steps_to_target"].map(T.num),
            "time to target (s)": t["time_to_target"].map(T.num),
            "seeds reaching": [f"{round(r * n)}/{n}" for r, n in zip(t["reached_target"].fillna(0), t["n_seeds"])],
            "diverged": [f"{round(d * n)}/{n}" for d, n in zip(t["divergence_rate"].fillna(0), t["n_seeds"])],
            "budget": [f"{s} settings, {r} runs" for s, r in zip(t["n_settings"], t["n_runs"])],
        }), right=(f"final {first['target_metric']}", "steps to target", "time to target (s)")))
    return b


def _setting(row) -> str:
    from optbench.report.style import setting_label

    return setting_label(row["hparams"], row["grad_mode"], row["clip"], row["scheduler"])


def _convergence_blocks(res: Results, settings: pd.DataFrame, table_paths: dict, out: Path) -> list:
    conv = T.attempted(T.convergence_table(res, settings))
    b: list = [Heading("Convergence tables")]
    b.append(Para(
        f"Every setting, best first (mean ± 95 % CI over the seeds that finished). Full tables: "
        f"[convergence.md]({_rel(table_paths['convergence.md'], out)}), "
        f"[convergence.csv]({_rel(table_paths['convergence.csv'], out)})."
    ))
    for task in res.tasks:
        d = T.convergence_display(res, conv, task)
        if d.empty:
            continue  # every run skipped: listed under "Runs that did not finish"
        b.append(Heading(task, 3))
        b.append(Table(d.head(T.PAGE_ROWS), right=tuple(d.columns[4:])))
        if len(d) > T.PAGE_ROWS:
            b.append(Para(f"… and {len(d) - T.PAGE_ROWS} more settings in the full table."))
    return b


def _problem_blocks(res: Results) -> list:
    s = res.summary
    bad = s[s["status"].isin(["failed", "timeout"])]
    skipped = s[s["status"] == "skipped"]
    if bad.empty and skipped.empty:
        return []
    b: list = [Heading("Runs that did not finish")]
    if not bad.empty:
        b.append(Para("Tracebacks are in `runs/<run_key>.json`."))
        b.append(Table(pd.DataFrame({
            "status": bad["status"], "task": bad["task"], "optimizer": bad["optimizer"],
            "setting": [_setting(r) for _, r in bad.iterrows()], "seed": bad["seed"].astype(str),
            "reason": bad["reason"], "run_key": bad["run_key"],
        })))
    if not skipped.empty:
        g = skipped.groupby(["task", "optimizer", "reason"]).size().reset_index(name="runs")
        b.append(Para("Skipped (not run):"))
        b.append(Table(g[["task", "optimizer", "runs", "reason"]].astype(str)))
    return b


def _provenance_blocks(res: Results) -> list:
    meta = res.meta
    used = {"optimizer": set(res.summary["optimizer"]), "scheduler": set(res.summary["scheduler"]),
            "task": set(res.summary["task"])}
    rows = []
    plugins = meta.get("plugins") or {}
    for kind in ("optimizer", "scheduler", "task"):
        table = plugins.get(kind) if isinstance(plugins.get(kind), dict) else {}
        for name in sorted(used[kind]):
            info = table.get(name) or {}
            version = (res.task_info(name).get("version") if kind == "task" else info.get("spec_version")) or "?"
            rows.append({"kind": kind, "name": name, "distribution": str(info.get("dist", "?")),
                         "dist version": str(info.get("version", "?")), "spec version": str(version)})
    b: list = [Heading("Provenance")]
    env = {k: meta.get(k) for k in ("optbench_version", "torch_version", "python_version", "platform", "cpu",
                                    "device", "gpu", "threads", "git_commit", "grid_hash") if meta.get(k) is not None}
    b.append(Table(pd.DataFrame({"": list(env), "value": [str(v) for v in env.values()]})))
    if rows:
        b.append(Table(pd.DataFrame(rows)))
    return b


# ---------------------------------------------------------------------------
# rendering

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")


def render_markdown(blocks_: list) -> str:
    out = []
    for b in blocks_:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append(T.markdown(b.df, {c: "right" for c in b.right}))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.src})\n\n*{b.caption}*")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then turn `code` and [text](link) into HTML (links are relative files only)."""
    parts, pos = [], 0
    for m in _LINK.finditer(text):
        parts.append(_code(html.escape(text[pos:m.start()])))
        href = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I):  # never emit an absolute URL
            parts.append(_code(html.escape(m.group(0))))
        else:
            parts.append(f'<a href="{html.escape(href)}">{_code(html.escape(m.group(1)))}</a>')
        pos = m.end()
    parts.append(_code(html.escape(text[pos:])))
    return "".join(parts)


def _code(escaped: str) -> str:
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1180px;
margin:2em auto;padding:0 1.2em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.5em}code{background:#f3f3f3;padding:0 .25em;border-radius:3px;font-size:.92em}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;white-space:nowrap}
th{background:#f6f6f6}td.r{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fbfbfb}a{color:#0b5cad}
"""


def render_html(blocks_: list, title: str) -> str:
    body = []
    for b in blocks_:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Image):
            body.append(f'<figure><img src="{html.escape(b.src)}" alt="{html.escape(b.alt)}" loading="lazy">'
                        f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _html_table(t: Table) -> str:
    cols = list(t.df.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = []
    for row in t.df.itertuples(index=False):
        cells = "".join(
            f"<td{' class=r' if c in t.right else ''}>{html.escape(str(v))}</td>" for c, v in zip(cols, row)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_pages(blocks_: list, out: Path, title: str) -> list[Path]:
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(blocks_), encoding="utf-8")
    page.write_text(render_html(blocks_, title), encoding="utf-8")
    return [md, page]
