"""Does ``--jobs 2`` pay?  Throughput of ``--jobs N`` over ``--jobs 1`` for whole grids.

    python benchmarks/parallel_ratio.py                        # toy grid, and GPT grid if available
    python benchmarks/parallel_ratio.py --grids toy --repeats 5
    python benchmarks/parallel_ratio.py --grids gpt --data corpus.jsonl

Each measurement is the wall time of a whole ``run_grid`` call into a fresh
folder -- worker start-up, shipping runs, writing every run file and the
tables included -- because that is what a user waits for.  ``--jobs 1`` is the
default in-process serial executor with torch's default threads (all cores);
``--jobs N`` uses N worker processes with cores // N threads each.

Both variants run in this one process, alternating which goes first in each
repeat, so they see the same machine state; on a shared machine compare the
ratios printed here, not wall times across separate invocations.  Each line
also says how many cores each variant actually got (CPU seconds of the grid
process and its workers over wall time): Linux shares the CPUs between
sessions, so while other sessions are busy a grid gets less than the cores
whatever ``--jobs`` says, and the ratio understates.  The target is a ratio
of at least 1.6 for ``--jobs 2`` on 2 otherwise idle cores.

The pool's one-off start (a forkserver importing torch, ~2-4 s) is printed
separately and kept out of the repeats; the CLI starts it while it imports
torch itself, so there the two overlap.

Grids:

``toy``   many short runs (pi and l2-bowl, 5 optimizers x 3 learning rates x
          seeds, 300 steps; ~50-100 ms each): per-run overhead dominates.
``gpt``   small GPT runs: the ``fineweb-model5`` task with ``size=tiny`` on a
          local jsonl corpus (``--data``; a synthetic one is written if not
          given), sgd/adam/adamw x 2 learning rates, 40 steps.  If that task
          is not installed, ``toy-long`` (the toy grid with 3000 steps per
          run) stands in, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from optbench import registry
from optbench.gridspec import GridBlock, GridSpec
from optbench.grid import run_grid

GPT_TASK = "fineweb-model5"
ROOT = Path(__file__).resolve().parents[1]

# The GPT-2 tokenizer's files, as the tests find them, so that no run needs the network.
if (ROOT.parent / "shared" / "data" / "tiktoken").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "data" / "tiktoken"))
OPTIMIZERS = ["sgd", "momentum", "adam", "adamw", "rmsprop"]


def toy_spec(steps: int, seeds: int) -> GridSpec:
    return GridSpec([GridBlock(tasks=["pi", "l2-bowl"], optimizers=OPTIMIZERS, seeds=list(range(seeds)),
                               steps=steps, hparams={"*": {"lr": [1e-3, 1e-2, 1e-1]}})], name="toy")


def gpt_spec(data: str, steps: int, seeds: int) -> GridSpec:
    return GridSpec([GridBlock(tasks=[GPT_TASK], optimizers=["sgd", "adam", "adamw"], seeds=list(range(seeds)),
                               steps=steps, hparams={"*": {"lr": [1e-3, 3e-3]}},
                               task_params={GPT_TASK: {"size": "tiny", "data": str(Path(data).resolve())}})],
                    name="gpt")


def synthetic_corpus(path: Path, docs: int = 400) -> Path:
    """A few hundred documents of English-like text, so the GPT grid needs no download."""
    rng = random.Random(0)
    words = ("the model learns a distribution over tokens and the optimizer follows its gradient while "
             "momentum smooths the path and the learning rate decides how far each step goes").split()
    with path.open("w") as f:
        for _ in range(docs):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(80, 200)))
            f.write(json.dumps({"text": text.capitalize() + "."}) + "\n")
    return path


class CpuMeter:
    """CPU seconds used by this process and its descendants (the workers) while
    the block runs, sampled every 0.1 s; divided by wall time it says how many
    cores the grid actually got.  On a shared machine that, not the core count,
    bounds the ratio: Linux's autogroup scheduler shares the CPUs between
    sessions, so other users' jobs leave a grid less than its cores."""

    def __enter__(self):
        import threading

        import psutil

        self._me = psutil.Process()
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._base = self._cpu(self._me)
        # the pool's forkserver outlives grids: count only what it uses from now on
        self._base_children = {c.pid: self._cpu(c) for c in self._me.children(recursive=True)}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _cpu(p) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.1):
            for child in self._me.children(recursive=True):
                try:
                    self._seen[child.pid] = self._cpu(child)
                except psutil.Error:  # exited between listing and reading
                    pass

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seconds = self._cpu(self._me) - self._base + sum(
            cpu - self._base_children.get(pid, 0.0) for pid, cpu in self._seen.items())


def time_grid(spec: GridSpec, reg, jobs: int, scratch: Path) -> tuple[float, int, float]:
    """Wall seconds, number of runs, and cores used on average."""
    import torch

    out = Path(tempfile.mkdtemp(dir=scratch))
    threads = torch.get_num_threads()  # run_grid sets the process's threads for a spec that names them
    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        outcome = run_grid(spec, out, reg, jobs=jobs, progress=False)
        seconds = time.perf_counter() - t0
    torch.set_num_threads(threads)
    bad = [s for s in outcome.summaries if s["status"] not in ("ok", "diverged")]
    if bad:
        raise SystemExit(f"{len(bad)} runs did not finish, e.g. {bad[0]['status']}: {bad[0]['reason']}")
    shutil.rmtree(out)
    return seconds, len(outcome.summaries), cpu.seconds / seconds


def measure(name: str, spec: GridSpec, reg, jobs: int, repeats: int, scratch: Path,
            single_thread: bool) -> dict[str, list[float]]:
    """Ratios per repeat: against the default serial run, and (``single_thread``)
    against a serial run with one torch thread, which isolates how well the runs
    spread over processes from how well torch already spreads one run over threads."""
    one = replace(spec, threads=1)
    ratios: dict[str, list[float]] = {"default": [], "threads=1": []}
    for rep in range(repeats):
        variants = [("jobs=1", spec, 1), (f"jobs={jobs}", spec, jobs)]
        if single_thread:
            variants.append(("jobs=1 threads=1", one, 1))
        if rep % 2:  # alternate the order, so that drift in the machine's load favours neither
            variants.reverse()
        times, used = {}, {}
        for label, s, j in variants:
            times[label], n, used[label] = time_grid(s, reg, j, scratch)
        par = f"jobs={jobs}"
        ratios["default"].append(times["jobs=1"] / times[par])
        line = ", ".join(f"{label} {times[label]:6.2f} s on {used[label]:.2f} cores" for label, _, _ in
                         sorted(variants))
        extra = ""
        if single_thread:
            ratios["threads=1"].append(times["jobs=1 threads=1"] / times[par])
            extra = f", vs threads=1 {ratios['threads=1'][-1]:.2f}"
        print(f"  {name} repeat {rep + 1}: {n} runs, {line}: ratio {ratios['default'][-1]:.2f}{extra}  "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    return {k: v for k, v in ratios.items() if v}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", default="toy,gpt", help="comma-separated: toy, gpt, toy-long")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per toy setting (grid size)")
    ap.add_argument("--gpt-steps", type=int, default=40)
    ap.add_argument("--gpt-seeds", type=int, default=1)
    ap.add_argument("--data", help="jsonl/parquet corpus with a 'text' column for the GPT grid")
    args = ap.parse_args()

    reg = registry.load()
    scratch = Path(tempfile.mkdtemp(prefix="optbench-parallel-"))
    grids = {}
    for g in args.grids.split(","):
        if g == "toy":
            grids["toy"] = toy_spec(300, args.seeds)
        elif g == "toy-long":
            grids["toy-long"] = toy_spec(3000, max(1, args.seeds // 5))
        elif g == "gpt" and GPT_TASK in reg.tasks:
            data = args.data or str(synthetic_corpus(scratch / "corpus.jsonl"))
            grids["gpt"] = gpt_spec(data, args.gpt_steps, args.gpt_seeds)
        elif g == "gpt":
            print(f"note: task {GPT_TASK!r} is not installed; measuring toy-long (3000-step toy runs) instead")
            grids["toy-long"] = toy_spec(3000, max(1, args.seeds // 5))
        else:
            ap.error(f"unknown grid {g!r}")
    from optbench.executors.processes import cores

    print(f"{cores()} cores; jobs={args.jobs} vs jobs=1; {args.repeats} repeats per grid.  'on N cores' is "
          f"the CPU the grid got on average: if jobs={args.jobs} got far fewer than {min(args.jobs, cores())}, "
          f"other sessions held the CPUs and the ratio understates what this machine does when idle")
    results = {}
    try:
        for name, spec in grids.items():
            # A small grid first, so that one-off costs land on neither side of the
            # comparison: importing pandas and pyarrow, filling the task's data
            # cache, and starting the worker pool's forkserver (which imports
            # torch once per process; `optbench grid --jobs N` starts it while
            # the CLI imports torch itself, so the two overlap).
            b = spec.blocks[0]
            warm = replace(spec, blocks=[replace(b, optimizers=b.optimizers[:1], seeds=[0], steps=2)])
            time_grid(warm, reg, 1, scratch)
            cold = time_grid(warm, reg, args.jobs, scratch)[0] - time_grid(warm, reg, 1, scratch)[0]
            print(f"  {name}: first --jobs {args.jobs} grid in a process pays {cold:.1f} s more to start the pool")
            results[name] = measure(name, spec, reg, args.jobs, args.repeats, scratch,
                                    single_thread=name == "gpt")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nthroughput ratio jobs={args.jobs} / jobs=1 (higher is better; target >= 1.6 on 2 cores):")
    for name, by_base in results.items():
        for base, r in by_base.items():
            label = name if base == "default" else f"{name} vs jobs=1 threads=1"
            print(f"  {label:26s} min {min(r):.2f}  median {statistics.median(r):.2f}  max {max(r):.2f}  "
                  f"(spread {max(r) - min(r):.2f} over {len(r)} repeats)")
    if "gpt" in results:
        print("  (a GPT run already uses several cores through torch's threads, so against the default serial\n"
              "   run the ratio is bounded by cores / torch's own speed-up from 1 to that many threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
