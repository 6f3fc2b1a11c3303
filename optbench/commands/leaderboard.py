"""``optbench leaderboard``: build a leaderboard CSV from results folders, or merge leaderboards.

    optbench leaderboard RESULTS_DIR... [--speed CSV] [-o leaderboard.csv]
    optbench leaderboard merge A.csv B.csv... -o all.csv
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "leaderboard", help="one row per (task, optimizer) from results folders; or `merge` leaderboard CSVs",
        usage="optbench leaderboard RESULTS_DIR... [--speed CSV] [-o CSV]\n"
              "       optbench leaderboard merge A.csv B.csv... [-o CSV]",
        description="The first form ranks each optimizer's best setting per task, with its tuning budget, "
                    "score and 95 % CI, steps and time to target, divergence rate, an AlgoPerf-style cross-task "
                    "score, the cost of one optimizer step from a speed table (`optbench speed`) and "
                    "provenance. The second checks leaderboard CSVs (schema, types, row checksums, "
                    "comparable task versions and settings) and merges them. A results folder called 'merge' "
                    "is written ./merge.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="results folders, or the word merge followed by leaderboard CSV files")
    p.add_argument("--speed", metavar="CSV",
                   help="speed table of `optbench speed -o CSV` for the optimizer_step_s column "
                        "(default: the first RESULTS_DIR/speed_steps.csv that exists)")
    p.add_argument("-o", "--out", metavar="CSV", help="write the leaderboard here (printed as a table either way)")
    p.set_defaults(func=run)


def run(args) -> int:
    import warnings

    from optbench.errors import OptbenchError
    from optbench.leaderboard import LeaderboardWarning, build_leaderboard, merge, write_leaderboard

    merging = args.inputs[0] == "merge"
    sources = args.inputs[1:] if merging else args.inputs
    if merging and len(sources) < 2:
        raise OptbenchError("merge needs two or more leaderboard CSVs: "
                            "`optbench leaderboard merge A.csv B.csv -o all.csv`")
    if merging and args.speed is not None:
        raise OptbenchError("--speed applies when building from results folders; merge keeps the step costs "
                            "the leaderboards carry")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeaderboardWarning)
        df = merge(sources) if merging else build_leaderboard(sources, speed_csv=args.speed)
    for w in caught:
        if issubclass(w.category, LeaderboardWarning):
            print(f"optbench: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(_text_table(df))
    if args.out:
        path = write_leaderboard(df, args.out)
        print(f"wrote {len(df)} rows to {path}", file=sys.stderr)
    return 0


def _text_table(df) -> str:
    """The columns a person scans first; the CSV has the rest."""
    from optbench.report.step_cost import seconds
    from optbench.report.tables import mean_ci, num

    view = df.assign(
        score=[mean_ci(m, c) for m, c in zip(df["score"], df["score_ci95"])],
        steps_to_target=df["steps_to_target"].map(num),
        time_to_target=df["time_to_target"].map(num),
        divergence_rate=df["divergence_rate"].map(lambda v: f"{v:.0%}" if v == v else "-"),
        cross_task_score=df["cross_task_score"].map(num),
        cross_task_score_steps=df["cross_task_score_steps"].map(num),
        optimizer_step=df["optimizer_step_s"].map(seconds),
    )
    columns = ["task", "rank", "optimizer", "hparams", "scheduler", "grad_mode", "clip", "n_settings", "score",
               "steps_to_target", "time_to_target", "divergence_rate", "cross_task_score", "cross_task_score_steps"]
    if df["optimizer_step_s"].notna().any():  # only with a speed table
        columns.append("optimizer_step")
    return view[columns].to_string(index=False)
