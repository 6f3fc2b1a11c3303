"""``optbench speed``: time one optimizer step for every installed optimizer and
write the speed table (CSV) that ``optbench report`` and the leaderboard read.

The timing is pytest-benchmark's (calibrated rounds, its statistics): this
command runs :mod:`optbench.speed_bench` in a child ``pytest --benchmark-json``
process, the same cases ``pytest benchmarks/`` runs, and converts the JSON
(see :mod:`optbench.speed` for the cases and the columns).
"""

from __future__ import annotations

import re
import sys

DEFAULT_OUT = "optbench-results/speed_steps.csv"


#: a line of ``pytest -v``: "...::test_step[scalar-adam[fused]] PASSED   [  5%]"
_PROGRESS = re.compile(r"::test_step\[(?P<id>.*)\] (?P<status>PASSED|FAILED|SKIPPED|ERROR)"
                       r".*?(?:\[\s*(?P<pct>\d+%)\])?\s*$")


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def register(sub) -> None:
    p = sub.add_parser(
        "speed", help="time one optimizer step of every optimizer plugin; write the speed table",
        description="Time one optimizer step (gradients in place) of every installed optimizer, in each "
                    "fused/foreach/for-loop variant it declares, on a scalar, the model-5 CPU preset's "
                    "parameters and 10M synthetic parameters, plus gradient-clipping and pure-Python "
                    "reference rows. Timing by pytest-benchmark; writes a CSV (one row per case).")
    p.add_argument("-o", "--output", default=DEFAULT_OUT, metavar="CSV",
                   help=f"speed table to write (default {DEFAULT_OUT}); pytest-benchmark's raw JSON goes "
                        f"beside it as <name>.benchmark.json")
    p.add_argument("--optimizers", type=_csv, help="comma-separated optimizer names (default: all installed)")
    p.add_argument("--sets", type=_csv, metavar="SETS",
                   help="parameter sets: scalar,model5-cpu,synthetic-10m (default: all)")
    p.add_argument("--kinds", type=_csv, help="optimizer,clip,python (default: all)")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression on case ids, e.g. 'adamw'")
    p.add_argument("--max-time", type=float, default=1.0,
                   help="seconds of rounds per case (pytest-benchmark --benchmark-max-time; default 1.0)")
    p.add_argument("--min-rounds", type=int, default=5, help="rounds per case at least (default 5)")
    p.add_argument("--quick", action="store_true", help="--max-time 0.1 --min-rounds 3: rough numbers in seconds")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own; use 1 on a busy machine)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--verbose", action="store_true", help="show pytest's full output")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os
    import subprocess
    import tempfile
    from importlib.util import find_spec
    from pathlib import Path

    from optbench import speed
    from optbench.cli import load_registry
    from optbench.errors import OptbenchError

    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        raise OptbenchError("optbench speed needs pytest-benchmark; install it with "
                            "`pip install pytest-benchmark` (or `pip install 'optbench[test]'`)") from None
    reg = load_registry(args)
    sel = speed.Selection(optimizers=args.optimizers, param_sets=args.sets or list(speed.PARAM_SETS),
                          kinds=args.kinds or list(speed.KINDS), plugins=args.plugins,
                          plugin_dirs=args.plugin_dirs, device=args.device, threads=args.threads)
    speed.check_selection(reg, sel)
    if "model5-cpu" in sel.param_sets:
        try:
            speed.model5_available()
        except speed.ParamSetUnavailable as exc:
            print(f"optbench: note: leaving out the model5-cpu parameter set: {exc}", file=sys.stderr)
            sel.param_sets = [s for s in sel.param_sets if s != "model5-cpu"]
    expected = speed.cases(reg, sel)
    if not expected:
        raise OptbenchError("nothing to time: the selection is empty (check --optimizers/--sets/--kinds)")
    max_time, min_rounds = (0.1, 3) if args.quick else (args.max_time, args.min_rounds)

    out = Path(args.output)
    raw = out.with_name(out.stem + ".benchmark.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optbench-speed-") as tmp:
        tmp = Path(tmp)
        (tmp / "pytest.ini").write_text("[pytest]\n")  # isolate from the user's pytest configuration
        problems = tmp / "problems.jsonl"
        cmd = [sys.executable, "-m", "pytest", find_spec("optbench.speed_bench").origin,
               "-c", str(tmp / "pytest.ini"), "--rootdir", str(tmp), "-p", "no:cacheprovider", "-p", "optbench.speed",
               "-v" if not args.verbose else "-vv", "-rfE", "--benchmark-only", f"--benchmark-json={raw}",
               f"--benchmark-max-time={max_time}", f"--benchmark-min-rounds={min_rounds}",
               "--benchmark-sort=name"]
        if args.keyword:
            cmd += ["-k", args.keyword]
        env = {**os.environ, speed.ENV: sel.to_env(), speed.ENV_PROBLEMS: str(problems)}
        print(f"timing {len(expected)} cases with pytest-benchmark (max {max_time:g} s each)...", file=sys.stderr)
        log = []
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                log.append(line)
                if args.verbose:
                    print(line, end="", file=sys.stderr)
                else:
                    m = _PROGRESS.search(line)
                    if m:
                        print(f"  [{m['pct']:>4}] {m['id']} {m['status'].lower()}", file=sys.stderr)
        if proc.returncode not in (0, 1) or not raw.exists():
            sys.stderr.write("".join(log[-40:]))
            raise OptbenchError(f"the benchmark run failed (pytest exit code {proc.returncode}); "
                                f"see its output above, or run `pytest {cmd[3]} -x` to debug")
        data = json.loads(raw.read_text())
        rows = speed.table_from_benchmark_json(data, None if args.keyword else expected,
                                               speed.read_problems(problems))
    out.write_text(speed.to_csv(rows))
    print(speed.format_table(rows))
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"\n{len(rows)} cases ({sum(r['status'] == 'ok' for r in rows)} timed) -> {out} "
          f"(raw pytest-benchmark JSON: {raw})")
    for r in failed:
        print(f"  failed: {r['param_set']} {r['name']} [{r['variant']}]: {r['reason']}", file=sys.stderr)
    return 3 if failed else 0
