"""The report's figures.  Each builder returns the figures it drew, or none when
the grid holds no data for it (no L2-bowl runs, a single learning rate ...).

Curves are aggregated with pandas first (mean and t-based 95 % CI per step)
and then drawn; letting seaborn bootstrap a CI at every step of every curve
is what makes naive report generation take minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from optbench.report import style
from optbench.report.results import SETTING, Results, best_settings
from optbench.report.stats import t975
from optbench.schema import STEP_COLUMNS

#: curves are thinned to about this many points: more is invisible at figure width
MAX_POINTS = 400


@dataclass
class Figure:
    """One written figure and what the report page says about it."""

    section: str
    title: str
    path: Path
    caption: str


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# ---------------------------------------------------------------------------
# aggregation


def curves(res: Results, runs_of: pd.DataFrame, column: str, by) -> pd.DataFrame:
    """Mean and 95 % CI over seeds of ``column`` per step, for each group ``by``.

    ``runs_of`` is a slice of summary.csv (``run_key`` plus the ``by`` columns).
    Non-finite values (a diverged run's last steps, steps without evaluation)
    are dropped, so each step averages the seeds that have a value there.
    Runs longer than ``MAX_POINTS`` recorded steps are first averaged within
    bins of consecutive steps (each bin plotted at its last step): a noisy
    minibatch loss then reads as its trend instead of aliasing.
    """
    by = list(by)
    runs = res.runs
    r = runs.loc[runs["run_key"].isin(runs_of["run_key"]), ["run_key", "step", column]]
    r = r[np.isfinite(r[column].to_numpy(dtype=float))]
    if r.empty:
        return pd.DataFrame(columns=[*by, "step", "mean", "lo", "hi", "n"])
    steps = np.unique(r["step"].to_numpy())
    if len(steps) > MAX_POINTS:
        width = math.ceil(len(steps) / MAX_POINTS)
        bin_of = pd.Series(np.arange(len(steps)) // width, index=steps)
        r = r.assign(_bin=r["step"].map(bin_of))
        g = r.groupby(["run_key", "_bin"], sort=False)
        r = pd.DataFrame({"step": g["step"].max(), column: g[column].mean()}).reset_index().drop(columns="_bin")
    r = r.merge(runs_of[["run_key", *by]].drop_duplicates("run_key"), on="run_key")
    agg = r.groupby([*by, "step"], sort=True, dropna=False)[column].agg(["mean", "std", "count"]).reset_index()
    tq = agg["count"].map(lambda n: t975(n - 1))
    half = (tq * agg["std"] / np.sqrt(agg["count"])).fillna(0.0)
    agg["lo"], agg["hi"], agg["n"] = agg["mean"] - half, agg["mean"] + half, agg["count"]
    return agg.drop(columns=["std", "count"])


def _band(ax, c: pd.DataFrame, colour, log: bool, **line_kw) -> None:
    lo = c["lo"].to_numpy(dtype=float)
    if log:
        # a CI wider than the mean would reach zero; on a log axis clip it at a tenth of the mean
        lo = np.maximum(lo, c["mean"].to_numpy(dtype=float) * 0.1)
    ax.fill_between(c["step"], lo, c["hi"], color=colour, alpha=0.2, linewidth=0)
    ax.plot(c["step"], c["mean"], color=colour, **line_kw)


def _panel_width(ncols: int) -> float:
    return max(2.1, min(2.9, 17.0 / max(ncols, 1)))


def _wrap_columns(n: int) -> int:
    """3 or 4 columns for n wrapped panels, whichever leaves fewer holes (4 on a tie)."""
    if n <= 4:
        return n
    return min((4, 3), key=lambda c: math.ceil(n / c) * c - n)


def _empty(ax, text: str = "no runs") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.5", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _selected_runs(res: Results, task: str, ok_only: bool = True) -> pd.DataFrame:
    s = res.summary[res.summary["task"] == task]
    return s[s["status"] == "ok"] if ok_only else s[s["status"] != "skipped"]


def _target_line(ax, res: Results, task: str, metric: str) -> None:
    tv = res.target_value(task)
    if res.target_metric(task) == metric and math.isfinite(tv):
        ax.axhline(tv, color="0.35", lw=0.8, ls=(0, (4, 3)), zorder=0)


# ---------------------------------------------------------------------------
# loss curves


def loss_curves(res: Results, settings: pd.DataFrame, out: Path, palette: dict) -> list[Figure]:
    figs = []
    for task in res.tasks:
        runs_of = _selected_runs(res, task)
        if runs_of.empty:
            continue
        st = settings[settings["task"] == task]
        figs.append(_best_curves(res, task, "loss", runs_of, st, out, palette))
        metric = res.target_metric(task)
        if metric != "loss" and metric in res.runs.columns:
            figs.append(_best_curves(res, task, metric, runs_of, st, out, palette))
        figs.append(_all_settings_curves(res, task, runs_of, st, out, palette))
    return [f for f in figs if f is not None]


def _best_curves(res, task, column, runs_of, st, out, palette) -> Figure | None:
    """Every optimizer's best setting on one axes per scheduler."""
    best = best_settings(st[st["n_ok"] > 0], ["optimizer", "scheduler"])
    sel = runs_of.merge(best[list(SETTING)], on=list(SETTING))
    c = curves(res, sel, column, ["optimizer", "scheduler"])
    if c.empty:
        return None
    schedulers = sorted(best["scheduler"].unique())
    ncols = min(len(schedulers), 3)
    nrows = math.ceil(len(schedulers) / ncols)
    log = style.use_log_scale(c["mean"])
    points = c.groupby(["optimizer", "scheduler"]).size().max()
    if points < 3:
        return None  # evaluated only at the end: no curve to draw, the tables and lr figure have the value
    sparse = points < 30  # an evaluation metric: show where it was measured
    # one legend for the figure: colours are the optimizers; the setting is named when it is the
    # same in every panel (the tables below the figures give it per scheduler otherwise)
    labels = {}
    for opt, g in best[best["optimizer"].isin(c["optimizer"])].groupby("optimizer"):
        settings = {style.setting_label(h, gm, cl) for h, gm, cl in zip(g["hparams"], g["grad_mode"], g["clip"])}
        labels[opt] = f"{opt} ({settings.pop()})" if len(settings) == 1 else opt
    from matplotlib.lines import Line2D

    with style.theme():
        fig, axes = style.new_figure(nrows, ncols, width=5.2 if ncols == 1 else 4.2, height=3.0, sharey=True)
        for k, (ax, sched) in enumerate(zip(axes.flat, schedulers)):
            for opt, cc in c[c["scheduler"] == sched].groupby("optimizer"):
                _band(ax, cc, palette[opt], log, lw=1.6, marker="o" if sparse else None, ms=3)
            _target_line(ax, res, task, column)
            ax.set_title(f"scheduler: {sched}")
            ax.set_xlabel("step")
            ax.set_ylabel(_metric_label(column) if k % ncols == 0 else "")
            if log:
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(schedulers):]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=palette[o], lw=1.6, marker="o" if sparse else None, ms=3) for o in labels]
        fig.legend(handles, list(labels.values()), loc="outside right center", frameon=False)
        style.title(fig, f"{task}: {_metric_label(column)}, best setting per optimizer (mean, 95 % CI over seeds)")
        path = style.save(fig, out / f"{_slug(column)}_best_{_slug(task)}.png")
    what = "training loss" if column == "loss" else _metric_label(column)
    has_target = res.target_metric(task) == column and math.isfinite(res.target_value(task))
    return Figure(
        "Loss curves", f"{task}: {what} of each optimizer's best setting", path,
        f"Each line is the optimizer's best setting under that scheduler (lowest mean final "
        f"{res.target_metric(task)} over seeds); the band is the 95 % t-interval over seeds. "
        f"Diverged runs are left out." + (" Dashed grey: the task's target." if has_target else ""),
    )


def _all_settings_curves(res, task, runs_of, st, out, palette) -> Figure | None:
    """One panel per (optimizer, scheduler): every setting tried, the best one in bold with its band.

    A full optimizer x scheduler grid is laid out as a matrix (rows:
    schedulers); a sparse one (say, schedules swept for one optimizer only)
    as a wrapped list of the combinations that exist, so no panel is empty.
    """
    c = curves(res, runs_of, "loss", SETTING)
    if c.empty:
        return None
    best = best_settings(st[st["n_ok"] > 0], ["optimizer", "scheduler"])
    combos = sorted(set(zip(c["optimizer"], c["scheduler"])) & set(zip(best["optimizer"], best["scheduler"])))
    optimizers = sorted({o for o, _ in combos})
    schedulers = sorted({s for _, s in combos})
    if len(schedulers) > 1 and len(combos) == len(optimizers) * len(schedulers):
        nrows, ncols = len(schedulers), len(optimizers)
        where = {(o, s): (schedulers.index(s), optimizers.index(o)) for o, s in combos}
    else:
        ncols = _wrap_columns(len(combos))
        nrows = math.ceil(len(combos) / ncols)
        where = {combo: divmod(k, ncols) for k, combo in enumerate(combos)}
    log = style.use_log_scale(c["mean"])
    from matplotlib.lines import Line2D

    with style.theme():
        # y is not shared: the point is the spread of settings within a panel, and one optimizer
        # reaching 1e-27 would flatten every other panel (the best-setting figure compares them)
        fig, axes = style.new_figure(nrows, ncols, width=_panel_width(ncols), height=2.2)
        for (opt, sched), (i, j) in where.items():
            ax = axes[i, j]
            cc = c[(c["optimizer"] == opt) & (c["scheduler"] == sched)]
            b = best[(best["optimizer"] == opt) & (best["scheduler"] == sched)].iloc[0]
            key = [b[k] for k in ("hparams", "grad_mode", "clip")]
            n_settings = 0
            for k, one in cc.groupby(["hparams", "grad_mode", "clip"], dropna=False):
                n_settings += 1
                if list(k) != key:
                    ax.plot(one["step"], one["mean"], color=palette[opt], lw=0.7, alpha=0.4)
            one = cc[(cc["hparams"] == key[0]) & (cc["grad_mode"] == key[1]) & (cc["clip"] == key[2])]
            _band(ax, one, palette[opt], log, lw=1.8)
            _target_line(ax, res, task, "loss")
            ax.set_title(f"{opt} · {sched}\nbest of {n_settings}: {style.setting_label(*key)}", fontsize=8.5)
            if log:
                ax.set_yscale("log")
            if j == 0:
                ax.set_ylabel("training loss")
            if i == nrows - 1 or (i + 1, j) not in where.values():
                ax.set_xlabel("step")
        used = set(where.values())
        for i in range(nrows):
            for j in range(ncols):
                if (i, j) not in used:
                    axes[i, j].set_visible(False)
        handles = [Line2D([], [], color="0.3", lw=1.8), Line2D([], [], color="0.3", lw=0.7, alpha=0.5)]
        fig.legend(handles, ["best setting (mean, 95 % CI)", "other settings (mean)"],
                   loc="outside lower center", ncols=2, frameon=False)
        style.title(fig, f"{task}: training loss of every setting, by optimizer and scheduler")
        path = style.save(fig, out / f"loss_grid_{_slug(task)}.png")
    return Figure(
        "Loss curves", f"{task}: every setting tried", path,
        "One panel per optimizer and scheduler. Thin lines: every other setting tried (mean over seeds); "
        "bold line with band: the best one (mean, 95 % CI over seeds); 'best of N' counts the settings "
        "that finished on at least one seed.",
    )


def _metric_label(column: str) -> str:
    return {"loss": "training loss", "val_loss": "validation loss", "grad_norm": "gradient norm (pre-clip)",
            "lr": "learning rate"}.get(column, column)


# ---------------------------------------------------------------------------
# learning-rate sensitivity


def lr_sensitivity(res: Results, settings: pd.DataFrame, out: Path, palette: dict) -> list[Figure]:
    st = settings[np.isfinite(settings["lr"].astype(float)) & (settings["lr"] > 0)]
    # at each lr, the best of the other axes (scheduler kept apart: it changes what lr means)
    pts = best_settings(st, ["task", "optimizer", "scheduler", "lr"])
    n_lrs = pts.groupby(["task", "optimizer", "scheduler"])["lr"].nunique()
    keep = n_lrs[n_lrs > 1].reset_index()[["task", "optimizer", "scheduler"]]
    pts = pts.merge(keep, on=["task", "optimizer", "scheduler"])
    if pts.empty:
        return []
    tasks = sorted(pts["task"].unique())
    schedulers = sorted(pts["scheduler"].unique())
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    import seaborn as sns
    from matplotlib.lines import Line2D

    dashes = {s: style.LINESTYLES[i % len(style.LINESTYLES)] for i, s in enumerate(schedulers)}
    markers = {s: style.MARKERS[i % len(style.MARKERS)] for i, s in enumerate(schedulers)}
    with style.theme():
        fig, axes = style.new_figure(nrows, ncols, width=4.0, height=3.0)
        for ax, task in zip(axes.flat, tasks):
            d = pts[pts["task"] == task].sort_values("lr")
            fin = d[d["n_ok"] > 0]
            for (opt, sched), g in fin.groupby(["optimizer", "scheduler"]):
                ax.errorbar(g["lr"], g["score"], yerr=g["score_ci95"].fillna(0.0), fmt="none",
                            ecolor=palette[opt], elinewidth=0.9, capsize=2, alpha=0.8)
            sns.lineplot(data=fin, x="lr", y="score", hue="optimizer", style="scheduler", palette=palette,
                         dashes={s: _dash(ls) for s, ls in dashes.items()}, markers=markers,
                         estimator=None, errorbar=None, ax=ax, legend=False, markersize=5)
            ax.set_xscale("log")
            lrs = sorted(d["lr"].unique())
            if len(lrs) <= 8:
                # label the learning rates actually tried rather than decades that may hold none of them
                from matplotlib.ticker import FixedLocator, NullLocator

                ax.xaxis.set_major_locator(FixedLocator(lrs))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xticklabels([f"{v:g}" for v in lrs])
            if style.use_log_scale(fin["score"]):
                ax.set_yscale("log")
            dead = d[d["n_ok"] == 0]
            if not dead.empty:
                # all seeds diverged: no loss to plot, so mark the lr at the top edge
                ax.scatter(dead["lr"], np.ones(len(dead)), marker="x", s=30, linewidths=1.5,
                           c=[palette[o] for o in dead["optimizer"]], transform=ax.get_xaxis_transform(),
                           clip_on=False, zorder=5)
            metric = res.target_metric(task)
            ax.set_title(task)
            ax.set_xlabel("learning rate")
            ax.set_ylabel(f"final {_metric_label(metric)}")
        for ax in list(axes.flat)[len(tasks):]:
            ax.set_visible(False)
        opts = sorted(pts["optimizer"].unique())
        handles = [Line2D([], [], color=palette[o], marker="o", lw=1.5) for o in opts]
        labels = list(opts)
        if len(schedulers) > 1:
            handles += [Line2D([], [], color="0.3", ls=dashes[s], marker=markers[s], lw=1.2) for s in schedulers]
            labels += [f"scheduler: {s}" for s in schedulers]
        if (pts["n_ok"] == 0).any():
            handles.append(Line2D([], [], color="0.3", marker="x", lw=0, markersize=6))
            labels.append("all seeds diverged")
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        style.title(fig, "Learning-rate sensitivity (mean, 95 % CI over seeds)")
        path = style.save(fig, out / "lr_sensitivity.png")
    return [Figure(
        "Learning-rate sensitivity", "Final target metric against learning rate", path,
        "For each learning rate, the best of the other settings (gradient mode, clipping, other "
        "hyper-parameters) under each scheduler; error bars are 95 % CIs over the seeds that finished. "
        "A cross on the top edge marks a learning rate at which every seed diverged.",
    )]


def _dash(ls):
    """seaborn wants dash tuples, "" for solid."""
    return {"-": "", "--": (4, 2), ":": (1, 2), "-.": (4, 1.5, 1, 1.5)}.get(ls, ls[1] if isinstance(ls, tuple) else "")


# ---------------------------------------------------------------------------
# gradient clipping


#: above this many (optimizer, scheduler) pairs the clipping figure keeps one column per optimizer
MAX_CLIP_COLUMNS = 8


def clipping(res: Results, settings: pd.DataFrame, out: Path, palette: dict) -> list[Figure]:
    """Pre-clip gradient norm and lr traces with and without clipping, for tasks whose grid varied clip.

    One column per optimizer and scheduler (per optimizer when that would be
    too many): the best clipped setting, beside the same setting at every
    other clip value, so the only difference within a panel is the clipping.
    """
    figs = []
    other = ["hparams", "scheduler", "grad_mode"]
    for task in res.tasks:
        st = settings[settings["task"] == task]
        if st["clip"].nunique() < 2 or not (st["clip"] == 0).any():
            continue
        n_clip = st.groupby(["optimizer", *other], dropna=False)["clip"].transform("nunique")
        clipped = st[(n_clip > 1) & (st["clip"] > 0)]  # ranked: the first of a group is its best
        if clipped.empty:
            continue
        per = ["optimizer", "scheduler"]
        if clipped.drop_duplicates(per).shape[0] > MAX_CLIP_COLUMNS:
            per = ["optimizer"]
        chosen = best_settings(clipped, per)[["optimizer", *other]].sort_values(["optimizer", "scheduler"])
        chosen["column"] = range(len(chosen))
        sel = _selected_runs(res, task, ok_only=False).merge(chosen, on=["optimizer", *other])
        gn = curves(res, sel, "grad_norm", ["column", "clip"])
        lr = curves(res, sel, "lr", ["column", "clip"])
        clips = sorted(sel["clip"].unique())
        ls = {c: style.LINESTYLES[i % len(style.LINESTYLES)] for i, c in enumerate(clips)}
        log_gn = style.use_log_scale(gn["mean"])
        from matplotlib.lines import Line2D

        ncols = len(chosen)
        with style.theme():
            fig, axes = style.new_figure(2, ncols, width=_panel_width(ncols), height=2.3, sharex=True)
            for j, row in enumerate(chosen.itertuples(index=False)):
                colour = palette[row.optimizer]
                label = style.setting_label(row.hparams, row.grad_mode, 0, row.scheduler)
                axes[0, j].set_title(f"{row.optimizer}\n{label}")
                for i, data in enumerate((gn, lr)):
                    for clip in clips:
                        cc = data[(data["column"] == row.column) & (data["clip"] == clip)]
                        if not cc.empty:
                            _band(axes[i, j], cc, colour, log_gn and i == 0, lw=1.3, ls=ls[clip])
                for clip in clips:
                    if clip > 0:
                        axes[0, j].axhline(clip, color="0.4", lw=0.7, ls=ls[clip], zorder=0)
                if log_gn:
                    axes[0, j].set_yscale("log")
                axes[1, j].set_ylim(bottom=0)
                axes[1, j].set_xlabel("step")
            axes[0, 0].set_ylabel("gradient norm (pre-clip)")
            axes[1, 0].set_ylabel("learning rate")
            handles = [Line2D([], [], color="0.3", ls=ls[c], lw=1.3) for c in clips]
            labels = ["no clipping" if c == 0 else f"clip at {c:g}" for c in clips]
            fig.legend(handles, labels, loc="outside lower center", ncols=len(clips), frameon=False)
            style.title(fig, f"{task}: gradient norm and learning rate, clipped vs not")
            path = style.save(fig, out / f"clipping_{_slug(task)}.png")
        figs.append(Figure(
            "Gradient clipping", f"{task}: clipped vs unclipped", path,
            "Top: gradient norm before clipping (grey lines: the clipping thresholds); bottom: the learning "
            "rate the schedule set. Each column is the best clipped setting of an optimizer"
            + (" and scheduler" if "scheduler" in per else "")
            + " beside the same setting at the other clip values; mean and 95 % CI over seeds, diverged runs "
            "up to where they stopped.",
        ))
    return figs


# ---------------------------------------------------------------------------
# gradient modes (zero_grad, never, accumulation)


def _parameter_columns(res: Results, task: str, run_keys) -> list[str]:
    """Per-step columns a task records besides the standard ones and its losses.

    Toy tasks record their weights this way (``w``; ``w0``, ``w1``); those are
    what the ``never`` zero_grad experiment is about.
    """
    runs = res.runs
    r = runs[runs["run_key"].isin(run_keys)]
    skip = {"run_key", *STEP_COLUMNS, res.target_metric(task)}
    cols = [c for c in r.columns if c not in skip and "loss" not in c
            and pd.api.types.is_numeric_dtype(r[c]) and r[c].notna().any()]
    return cols[:3]


def grad_modes(res: Results, settings: pd.DataFrame, out: Path, palette: dict) -> list[Figure]:
    """Parameter trajectories under each gradient mode, beside the usual ``zero`` one."""
    figs = []
    other = ["hparams", "scheduler", "clip"]
    for task in res.tasks:
        st = settings[settings["task"] == task]
        modes = set(st["grad_mode"])
        if len(modes) < 2 or "zero" not in modes:
            continue
        runs_of = _selected_runs(res, task, ok_only=False)
        chosen = []
        for opt, g in st.groupby("optimizer"):
            n_modes = g.groupby(other, dropna=False)["grad_mode"].nunique()
            paired = n_modes[n_modes > 1].reset_index()[other]
            cand = g.merge(paired, on=other)
            cand = cand[cand["grad_mode"] == "zero"]
            if not cand.empty:
                chosen.append(cand.iloc[0][["optimizer", *other]])
        if not chosen:
            continue
        chosen = pd.DataFrame(chosen)
        sel = runs_of.merge(chosen, on=["optimizer", *other])
        columns = _parameter_columns(res, task, sel["run_key"]) or ["loss"]
        optimizers = sorted(chosen["optimizer"])
        order = sorted(sel["grad_mode"].unique(), key=lambda m: (m != "zero", m))
        ls = {m: style.LINESTYLES[i % len(style.LINESTYLES)] for i, m in enumerate(order)}
        data = {col: curves(res, sel, col, ["optimizer", "grad_mode"]) for col in columns}
        from matplotlib.lines import Line2D

        with style.theme():
            fig, axes = style.new_figure(len(columns), len(optimizers), width=_panel_width(len(optimizers)),
                                         height=2.4, sharex=True)
            for j, opt in enumerate(optimizers):
                row = chosen[chosen["optimizer"] == opt].iloc[0]
                label = style.setting_label(row["hparams"], "zero", row["clip"], row["scheduler"])
                axes[0, j].set_title(f"{opt}\n{label}")
                for i, col in enumerate(columns):
                    c = data[col]
                    log = col == "loss" and style.use_log_scale(c["mean"])
                    for mode in order:
                        cc = c[(c["optimizer"] == opt) & (c["grad_mode"] == mode)]
                        if not cc.empty:
                            _band(axes[i, j], cc, palette[opt], log, lw=1.3, ls=ls[mode])
                    if log:
                        axes[i, j].set_yscale("log")
                    axes[i, 0].set_ylabel(_metric_label(col))
                axes[-1, j].set_xlabel("step")
            handles = [Line2D([], [], color="0.3", ls=ls[m], lw=1.3) for m in order]
            labels = [_mode_label(m) for m in order]
            fig.legend(handles, labels, loc="outside lower center", ncols=len(order), frameon=False)
            what = "parameter trajectory" if columns != ["loss"] else "training loss"
            style.title(fig, f"{task}: {what} by gradient mode")
            path = style.save(fig, out / f"grad_modes_{_slug(task)}.png")
        figs.append(Figure(
            "Gradient modes", f"{task}: {what} with and without zero_grad", path,
            "`zero` clears gradients before every step (the usual loop); `never` lets them accumulate "
            "for the whole run; `accumN` sums N micro-batches per step. Each column is the optimizer's best "
            "`zero` setting and the same setting under the other modes; mean and 95 % CI over seeds.",
        ))
    return figs


def _mode_label(mode: str) -> str:
    if mode == "zero":
        return "zero_grad every step"
    if mode == "never":
        return "never zero_grad"
    return f"{mode} (accumulate {mode[5:]} micro-batches)" if mode.startswith("accum") else mode


# ---------------------------------------------------------------------------
# speed

#: (summary column, axis label, scale): scale "ms" multiplies seconds by 1000, "bytes" picks a unit
SPEED_PANELS = (
    ("time_per_step", "time per step (ms)", "ms"),
    ("tokens_per_s", "tokens / s", None),
    ("peak_mem_bytes", "peak memory", "bytes"),
    ("opt_state_bytes", "optimizer state", "bytes"),
)


def _min_max(values) -> tuple[float, float]:
    return (float(np.nanmin(values)), float(np.nanmax(values))) if len(values) else (math.nan, math.nan)


def speed(res: Results, settings: pd.DataFrame, out: Path, palette: dict) -> list[Figure]:
    import seaborn as sns

    from optbench.report.stats import ci95_bounds

    s = res.summary[res.summary["status"] == "ok"]
    if s.empty:
        return []
    # accumulation runs do N forward/backward passes per step; compare the plain loop where there is one
    plain = s[s["grad_mode"] == "zero"]
    s = pd.concat([plain, s[~s["task"].isin(plain["task"])]])
    panels = [p for p in SPEED_PANELS if (s[p[0]].fillna(0) > 0).any()]
    if not panels:
        return []
    tasks = sorted(s["task"].unique())
    order = sorted(s["optimizer"].unique())
    with style.theme():
        fig, axes = style.new_figure(len(tasks), len(panels), width=max(2.6, 0.45 * len(order) + 1.0), height=2.3)
        for i, task in enumerate(tasks):
            d = s[s["task"] == task]
            opts = [o for o in order if o in set(d["optimizer"])]
            for j, (col, label, scale) in enumerate(panels):
                ax = axes[i, j]
                v = d[["optimizer", col]].copy()
                v[col] = v[col].astype(float)
                unit_label = label
                if scale == "ms":
                    v[col] *= 1e3
                elif scale == "bytes":
                    div, unit = style.byte_unit(v[col].max())
                    v[col] /= div
                    unit_label = f"{label} ({unit})"
                if not (v[col].fillna(0) > 0).any():
                    _empty(ax, "not measured")
                else:
                    # Memory is not a quantity to average over runs with a t-interval: on CPU it is
                    # RSS growth, which page granularity and allocator reuse make lumpy.  Show the
                    # median and the range.
                    memory = scale == "bytes"
                    sns.barplot(data=v, x="optimizer", y=col, hue="optimizer", order=opts, hue_order=opts,
                                palette=palette, estimator="median" if memory else "mean",
                                errorbar=_min_max if memory else ci95_bounds, capsize=0.2,
                                err_kws={"linewidth": 1}, width=0.6, ax=ax, legend=False)
                    ax.set_xlabel("")
                    ax.tick_params(axis="x", labelrotation=35 if len(opts) > 3 else 0)
                    for lab in ax.get_xticklabels():
                        lab.set_horizontalalignment("right" if len(opts) > 3 else "center")
                ax.set_ylabel(unit_label)
                ax.set_title(task if j == 0 else "", loc="left", fontweight="bold")
        style.title(fig, "Speed and memory per optimizer")
        path = style.save(fig, out / "speed.png")
    return [Figure(
        "Speed", "Time per step, throughput and memory", path,
        "One row per task, over every finished run with `zero` gradients (runs with accumulation do several "
        "forward/backward passes per step). Time and throughput: mean and 95 % CI over runs. Memory: median "
        "and range over runs; peak memory is CUDA max-allocated, or on CPU the growth of the process RSS over "
        "the run after malloc's free pages are returned at its start (toy runs: mostly noise near 0); "
        "optimizer state is the bytes held in `optimizer.state`. "
        "Panels are left out when no run measured them.",
    )]


#: every figure builder, in report order
BUILDERS = (loss_curves, lr_sensitivity, clipping, grad_modes, speed)
