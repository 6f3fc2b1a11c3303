"""``optbench report``: figures, tables and one offline page from a results folder.

::

    from optbench.report import build_report
    paths = build_report("optbench-results/quick")   # -> .../report/report.html, ...

This module imports nothing heavy: pandas, matplotlib and seaborn load inside
:func:`build_report` (its submodules import them at the top), so that
``import optbench`` and the CLI start fast.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_report"]


def build_report(results_dir, out_dir=None, speed_csv=None) -> list[Path]:
    """Write the report of ``results_dir`` into ``out_dir`` (default ``results_dir/report``).

    Produces ``figures/*.png``, ``tables/{convergence,speed}.{csv,md}``,
    ``leaderboard.csv``, ``report.md`` and ``report.html`` (images beside them,
    relative links, nothing fetched from the network) and returns their paths,
    pages first.  A figure the grid has no data for is left out.  With a speed
    table (``speed_csv``, the CSV of ``optbench speed``; None: ``results_dir/
    speed_steps.csv`` if there is one) the report adds ``figures/step_cost.png``,
    ``tables/step_cost.{csv,md}`` and an "Optimizer step cost" section.  Raises
    :class:`optbench.errors.OptbenchError` with one line when ``results_dir`` is
    not a results folder of this schema version, or ``speed_csv`` not a speed table.
    """
    from optbench.errors import OptbenchError
    from optbench.leaderboard import build_leaderboard, write_leaderboard
    from optbench.report import figures, page, step_cost, style, tables
    from optbench.report.results import load, settings_table

    res = load(results_dir)
    if res.summary.empty:
        raise OptbenchError(f"{res.path} holds no runs; run `optbench grid ... --out {res.path}` first")
    # read before drawing anything, so that a bad --speed file fails in a second, not after the figures
    speed_file = step_cost.find(res.path, speed_csv)
    sc = step_cost.read(speed_file) if speed_file is not None else None
    out = Path(out_dir) if out_dir is not None else res.path / "report"
    fig_dir, table_dir = out / "figures", out / "tables"
    fig_dir.mkdir(parents=True, exist_ok=True)

    settings = settings_table(res.summary)
    speed_optimizers = sc.rows.loc[sc.rows["kind"] == "optimizer", "name"] if sc is not None else ()
    palette = style.optimizer_palette(res.optimizers, extra=speed_optimizers)
    drawn = []
    for builder in figures.BUILDERS:
        drawn += builder(res, settings, fig_dir, palette)
    table_paths = tables.write_tables(res, settings, table_dir)
    if sc is not None:
        sc.figure = step_cost.figure(sc, fig_dir, palette)
        sc.tables = step_cost.write_tables(sc, table_dir)

    written = []
    try:
        lb = build_leaderboard([res.path], speed_csv=speed_file)
        written.append(write_leaderboard(lb, out / "leaderboard.csv"))
    except OptbenchError:
        # e.g. one task run with two step counts: the report still stands, without a leaderboard
        lb = None
    title = f"optbench report: {(res.meta.get('grid') or {}).get('name') or res.path.name}"
    pages = page.write_pages(page.blocks(res, settings, drawn, table_paths, lb, out, sc), out, title)
    paths = [*pages, *written, *(f.path for f in drawn), *table_paths.values(), *(sc.paths if sc else ())]
    _forget_previous(out, paths)
    return paths


#: the files the last report wrote into its folder, so the next one can remove those it no longer writes
MANIFEST = ".optbench-report.json"


def _forget_previous(out: Path, paths: list[Path]) -> None:
    """Delete what an earlier report in ``out`` wrote and this one did not (a figure of a task
    no longer in the grid would otherwise sit beside the page), and nothing else: ``out`` may
    be a folder the user keeps other files in."""
    import json

    manifest = out / MANIFEST
    now = {p.resolve().relative_to(out.resolve()).as_posix() for p in paths}
    try:
        before = set(json.loads(manifest.read_text()))
    except (OSError, ValueError, TypeError):
        before = set()
    for rel in sorted(before - now):
        target = (out / rel).resolve()
        if out.resolve() in target.parents and target.suffix in (".png", ".csv", ".md", ".html"):
            target.unlink(missing_ok=True)
    manifest.write_text(json.dumps(sorted(now), indent=0))
