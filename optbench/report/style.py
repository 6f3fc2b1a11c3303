"""Look and feel shared by every figure: one colour per optimizer, one theme, one way to save.

Figures are built on ``matplotlib.figure.Figure`` directly instead of pyplot:
no global backend switch (a notebook that calls ``build_report`` keeps its
inline backend), no figure manager to leak memory, and ``savefig`` renders
PNGs with Agg regardless of the session's backend.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

#: pixels per inch of saved figures: sharp on a laptop, small enough for a README
DPI = 110

#: line styles for the levels of a secondary variable (clip value, gradient mode)
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))

#: marker shapes for the same purpose; "x" is kept free to mean "diverged"
MARKERS = ("o", "s", "^", "D", "v", "P")


def optimizer_palette(names, extra=()) -> dict[str, tuple]:
    """Colour per optimizer name, assigned in sorted order so that every figure agrees.

    tab10 up to ten optimizers (the most distinguishable qualitative set),
    tab20 up to twenty, then evenly spaced hues.  ``extra`` names (optimizers
    only some figure shows, like the speed table's) take the colours after
    ``names``, so that adding them leaves the others' colours as they were
    (unless the total crosses ten or twenty, where the palette changes).
    """
    import seaborn as sns

    names = sorted(set(names))
    names += sorted(set(extra) - set(names))
    n = len(names)
    if n <= 10:
        colours = sns.color_palette("tab10", 10)
    elif n <= 20:
        colours = sns.color_palette("tab20", 20)
    else:
        colours = sns.color_palette("husl", n)
    return {name: tuple(colours[i]) for i, name in enumerate(names)}


@contextlib.contextmanager
def theme():
    """Seaborn's whitegrid theme, scoped so the caller's rcParams are untouched."""
    import matplotlib as mpl
    import seaborn as sns

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.8)}
    rc.update({"axes.titlesize": 9.5, "figure.titlesize": 11, "legend.fontsize": 8, "legend.title_fontsize": 8.5})
    with mpl.rc_context(rc):
        yield


def new_figure(nrows: int, ncols: int, width: float = 2.9, height: float = 2.3, **subplot_kw):
    """A Figure with an ``nrows x ncols`` array of axes, sized per panel."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.5, ncols * width + 0.8), nrows * height + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def title(fig, text: str) -> None:
    """Left-aligned figure title, wrapped to the figure's width so it is never cut off."""
    import textwrap

    chars = max(30, int(fig.get_figwidth() * 13))  # ~13 characters per inch at the theme's title size
    fig.suptitle("\n".join(textwrap.wrap(text, chars)), x=0.01, ha="left")


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        _drop_log_minor_ticks(ax)
    fig.savefig(path, dpi=DPI)
    return path


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(x, _pos=None) -> str:
    """'10⁻⁴' in plain text: the same look as matplotlib's mathtext labels at a fraction of the cost."""
    if not x > 0:
        return ""
    e = math.log10(x)
    if abs(e - round(e)) > 1e-6:
        return f"{x:g}"
    return "10" + str(int(round(e))).translate(_SUPERSCRIPT)


def _drop_log_minor_ticks(ax) -> None:
    """Log axes spanning two or more decades keep only their decade ticks, labelled in plain text.

    The theme draws no minor grid, yet matplotlib still lays out (and, under
    constrained layout, measures twice) eight minor ticks per decade per axes,
    and parses every decade label as mathtext: together that was most of the
    report's run time, for marks nobody reads.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log" and lo > 0 and hi > 0 and abs(math.log10(hi / lo)) >= 2:
            axis.set_minor_locator(NullLocator())
            axis.set_minor_formatter(NullFormatter())
            if not isinstance(axis.get_major_locator(), FixedLocator):  # a figure chose its own ticks
                axis.set_major_formatter(FuncFormatter(_power_of_ten))


def setting_label(hparams: str, grad_mode: str = "zero", clip: float = 0.0, scheduler: str | None = None) -> str:
    """``lr=0.01, wd=0 · never · clip 1`` from a setting's columns (defaults left out)."""
    try:
        hp = json.loads(hparams) if hparams else {}
    except ValueError:
        hp = None
    if isinstance(hp, dict):
        parts = [", ".join(f"{k}={_short(v)}" for k, v in hp.items())] if hp else ["defaults"]
    else:
        parts = [str(hparams)]
    if scheduler:
        parts.append(scheduler)
    if grad_mode and grad_mode != "zero":
        parts.append(grad_mode)
    if clip and clip > 0:
        parts.append(f"clip {_short(clip)}")
    return " · ".join(parts)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def use_log_scale(values) -> bool:
    """Log y when everything is positive and spans more than ~1.5 decades: then a
    linear axis squashes the end of training, which is where optimizers differ."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0 or (x <= 0).any():
        return False
    return math.log10(x.max() / x.min()) > 1.5


def byte_unit(max_bytes: float) -> tuple[float, str]:
    """(divisor, unit) that keeps a byte axis between 1 and 1024."""
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if max_bytes >= div:
            return div, unit
    return 1, "B"
