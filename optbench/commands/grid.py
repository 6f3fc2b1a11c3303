"""``optbench grid``: run tasks x optimizers x hyper-parameters x schedules x
gradient modes x clipping x seeds, and write the results folder."""

from __future__ import annotations

import sys


def _csv(cast=str):
    def parse(text):
        from optbench.config import parse_list

        return parse_list(text, cast=lambda s: cast(s.strip()))

    return parse


def _clip(text):
    from optbench.config import parse_value

    v = parse_value(text)
    return 0.0 if v in (None, "none", False) else v


def register(sub) -> None:
    p = sub.add_parser("grid", help="run a benchmark grid (default: the 'quick' preset)", allow_abbrev=False,
                       description="Run a grid. With no axis flags it runs the 'quick' preset; with --preset or "
                                   "--config, axis flags replace that axis in every block.")
    src = p.add_argument_group("what to run")
    src.add_argument("--preset", help="smoke | quick (default) | course")
    src.add_argument("--config", help="TOML grid file (see README)")
    src.add_argument("--tasks", type=_csv(), help="comma-separated task names")
    src.add_argument("--optimizers", type=_csv(), help="comma-separated optimizer names")
    src.add_argument("--schedulers", type=_csv(), help="comma-separated LR schedules (default constant)")
    src.add_argument("--grad-modes", dest="grad_modes", type=_csv(),
                     help="zero (zero_grad each step), never (gradients pile up), accumN (N micro-batches/step)")
    src.add_argument("--clip", type=_csv(_clip), help="max gradient norms; 0 = no clipping (e.g. 0,1)")
    src.add_argument("--seeds", type=_csv(int), help="comma-separated integer seeds (e.g. 0,1,2)")
    src.add_argument("--set", action="append", metavar="NAME.KEY=V[,V...]",
                     help="hyper-parameter lists (adam.lr=1e-3,1e-2; lr=... for all) or task/scheduler params")
    src.add_argument("--steps", type=int, help="optimizer steps per run (default: each task's own)")
    src.add_argument("--data", help="local text corpus (parquet/jsonl with a 'text' column) for the model-5 tasks")
    how = p.add_argument_group("how to run")
    how.add_argument("--out", help="results folder (default optbench-results/<preset>)")
    how.add_argument("--device", help="cpu (default) or cuda[:N]")
    how.add_argument("--threads", type=int, help="torch threads per run")
    how.add_argument("--timeout", type=float, help="seconds after which a run ends as 'timeout'")
    how.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                     help="runs at a time, each in its own worker process (default 1: in this process)")
    how.add_argument("--executor", choices=("serial", "processes", "dask"),
                     help="serial (default for --jobs 1), processes (default for --jobs N > 1) or dask "
                          "(a local Dask cluster of N workers, or the one at --scheduler; docs/cluster.md)")
    how.add_argument("--scheduler", dest="scheduler_address", metavar="ADDRESS",
                     help="Dask scheduler to run on, e.g. tcp://10.0.0.5:8786 (with --executor dask)")
    how.add_argument("--max-memory", dest="max_memory", type=float, metavar="GiB",
                     help="address space per worker process; a run that needs more fails with MemoryError "
                          "instead of waking the OOM killer (implies a worker process)")
    how.add_argument("--force", action="store_true", help="re-run runs already in --out")
    how.add_argument("--keep-failed", action="store_true", help="do not retry runs that failed before")
    how.add_argument("--dry-run", action="store_true", help="list what would run and stop")
    how.add_argument("--progress", action="store_true", default=None, help="always show the progress bar")
    how.add_argument("--quiet", action="store_true", help="print only the final summary line")
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.dry_run:
        from optbench import executors

        executors.prestart(**executor_kwargs(args))  # worker start-up overlaps our imports
    from optbench.cli import load_registry
    from optbench.config import build_spec
    from optbench.grid import run_grid

    reg = load_registry(args)
    spec = build_spec(args, reg)
    out = args.out or f"optbench-results/{spec.name}"
    echo = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    outcome = run_grid(spec, out, reg, force=args.force, dry_run=args.dry_run, retry_failed=not args.keep_failed,
                       progress=False if args.quiet else args.progress, echo=echo,
                       **executor_kwargs(args))
    if args.dry_run:
        print(f"{len(outcome.planned)} runs to do, {outcome.reused} already in {out}")
        for rc, key in outcome.planned:
            print(f"  {key}  {rc.task} {rc.optimizer} {rc.hparams_label} {rc.scheduler} {rc.grad_mode} "
                  f"clip={rc.clip:g} seed={rc.seed} steps={rc.steps}")
        return 0
    counts = ", ".join(f"{outcome.count(s)} {s}" for s in ("ok", "diverged", "failed", "timeout", "skipped")
                       if outcome.count(s))
    print(f"{len(outcome.summaries)} runs ({outcome.ran} ran, {outcome.reused} reused): {counts} "
          f"in {outcome.seconds:.1f} s -> {out}")
    for s in outcome.problems:
        print(f"  {s['status']}: {s['task']} {s['optimizer']} {s['hparams']} seed={s['seed']}: {s['reason']}",
              file=sys.stderr)
    if not args.quiet and outcome.summaries:
        print_best(out)
    return outcome.exit_code


def executor_kwargs(args) -> dict:
    """Executor choice from flags that the executors add (see optbench.executors)."""
    return {"executor": getattr(args, "executor", None), "jobs": getattr(args, "jobs", None) or 1,
            "executor_options": {k: getattr(args, k) for k in ("scheduler_address", "max_memory")
                                 if getattr(args, k, None)}}


def print_best(out) -> None:
    """Per task, each optimizer's best setting by mean final target metric.

    Reads convergence.csv with the csv module: importing pandas to print ten
    lines would cost ~0.4 s of every grid's start-up.
    """
    import csv
    import math

    def num(text):
        try:
            return float(text) if text != "" else math.nan
        except ValueError:
            return text

    with open(f"{out}/convergence.csv", newline="") as f:
        conv = [r for r in csv.DictReader(f) if num(r.get("n_ok", "")) > 0]
    if not conv:
        return

    def score(r):
        v = num(r["final_target_metric_mean"])
        return (v != v, v if v == v else 0.0)  # NaN last

    best: dict[tuple, dict] = {}
    for r in sorted(conv, key=score):
        best.setdefault((r["task"], r["optimizer"]), r)
    rows = sorted(best.values(), key=lambda r: (r["task"], *score(r)))
    cols = [("task", "task"), ("optimizer", "optimizer"), ("hparams", "hparams"), ("scheduler", "scheduler"),
            ("grad_mode", "grad_mode"), ("clip", "clip"), ("final_target_metric_mean", "final"),
            ("final_target_metric_ci95", "±ci95"), ("steps_to_target_mean", "steps_to_target"),
            ("n_ok", "n_ok"), ("n_seeds", "n_seeds")]

    def cell(text):
        v = num(text)
        if isinstance(v, str):
            return v
        if v != v:
            return "NaN"
        return str(int(v)) if v == int(v) and abs(v) < 1e15 and "." not in text and "e" not in text else f"{v:.4g}"

    table = [[label for _, label in cols]] + [[cell(r.get(c, "")) for c, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    print("\nbest setting per task and optimizer (final target metric, mean over seeds):")
    for row in table:
        print(" ".join(x.rjust(w) for x, w in zip(row, widths)))
