"""``optbench report RESULTS_DIR [-o OUT] [--speed CSV]``: figures, tables and an offline page."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="figures, tables and an offline HTML/Markdown page from a results folder",
        description="Write loss curves, learning-rate sensitivity, clipping and gradient-mode traces, speed "
                    "plots, convergence and speed tables, a leaderboard.csv, the cost of one optimizer step when "
                    "given a speed table (`optbench speed`), and report.md + report.html "
                    "(images beside them, no network needed to open them).")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="the --out folder of `optbench grid`")
    p.add_argument("-o", "--out", metavar="OUT", help="where to write the report (default RESULTS_DIR/report)")
    p.add_argument("--speed", metavar="CSV",
                   help="speed table of `optbench speed -o CSV` to add as an optimizer step cost section "
                        "(default RESULTS_DIR/speed_steps.csv when it exists)")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from optbench.report import build_report

    t0 = time.perf_counter()
    paths = build_report(args.results_dir, args.out, speed_csv=args.speed)
    for p in paths:
        print(p)
    print(f"report written in {time.perf_counter() - t0:.1f} s: open {paths[1]}", file=sys.stderr)
    return 0
