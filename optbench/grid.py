"""Run a grid end to end: validate, prepare, skip what is done, run, write tables.

Python API::

    from optbench import registry
    from optbench.grid import run_grid
    from optbench.gridspec import GridBlock, GridSpec

    spec = GridSpec([GridBlock(tasks=["pi"], optimizers=["sgd", "adam"], hparams={"*": {"lr": [0.01]}})])
    outcome = run_grid(spec, "out/")
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from optbench import executors, registry
from optbench.errors import OptbenchError
from optbench.gridspec import GridSpec, RunConfig, canonical_json, expand
from optbench.malloc import tune_malloc
from optbench.runner import _summary_base, run_key
from optbench.schema import SCHEMA_VERSION
from optbench.store import atomic_write_text, is_done, read_run, write_run, write_tables


@dataclass
class GridOutcome:
    out: Path
    summaries: list[dict] = field(default_factory=list)
    ran: int = 0
    reused: int = 0
    seconds: float = 0.0
    planned: list[tuple[RunConfig, str]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for s in self.summaries if s["status"] == status)

    @property
    def problems(self) -> list[dict]:
        return [s for s in self.summaries if s["status"] in ("failed", "timeout")]

    @property
    def exit_code(self) -> int:
        """0 when every run finished (ok or diverged: both are results); 3 if any failed or timed out."""
        return 3 if self.problems else 0


def _prepare_tasks(configs: list[RunConfig], reg) -> dict[tuple, str]:
    """Call each task's ``prepare`` once per parameter set; map failures to a reason."""
    failures: dict[tuple, str] = {}
    for task, tparams in dict.fromkeys((rc.task, rc.task_params) for rc in configs):
        prepare = reg.tasks[task].prepare
        if prepare is None:
            continue
        try:
            prepare(**dict(tparams))
        except OptbenchError as exc:
            failures[(task, tparams)] = str(exc)
    return failures


def _skipped(rc: RunConfig, reg, key: str, reason: str) -> dict:
    s = _summary_base(rc, reg, key)
    s.update(status="skipped", reason=reason, steps=0)
    return {"schema": SCHEMA_VERSION, "config": rc.as_dict(), "summary": s, "records": {}, "traceback": None}


def run_grid(
    spec: GridSpec,
    out,
    reg=None,
    *,
    executor: str | None = None,
    jobs: int = 1,
    executor_options: dict | None = None,
    force: bool = False,
    dry_run: bool = False,
    retry_failed: bool = True,
    progress: bool | None = None,
    echo=None,
) -> GridOutcome:
    """Run ``spec`` into the folder ``out``; finished runs found there are reused.

    ``force`` re-runs everything; ``retry_failed=False`` also keeps failed and
    timed-out runs as done.  Raises OptbenchError, before running anything,
    for any problem with the spec.
    """
    t_start = time.perf_counter()
    reg = reg or registry.load()
    out = Path(out)
    # Serial runs need it as much as workers (which inherit the environment
    # it exports): see optbench.malloc.
    tune_malloc()
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    configs = expand(spec, reg)
    items = [(rc, run_key(rc, reg)) for rc in configs]
    outcome = GridOutcome(out=out, planned=items)
    results: dict[str, dict] = {}
    todo = []
    for rc, key in items:
        stored = None if force else read_run(out, key)
        if is_done(stored, retry_failed=retry_failed):
            results[key] = stored
        else:
            todo.append((rc, key))
    outcome.reused = len(results)
    if dry_run:
        outcome.planned = todo
        return outcome

    out.mkdir(parents=True, exist_ok=True)
    failures = _prepare_tasks([rc for rc, _ in todo], reg)
    runnable = []
    for rc, key in todo:
        reason = failures.get((rc.task, rc.task_params))
        if reason:
            results[key] = _skipped(rc, reg, key, reason)
        else:
            runnable.append((rc, key))
    for reason in dict.fromkeys(failures.values()):
        (echo or (lambda m: None))(f"skipped: {reason}")

    bar = _progress_bar(len(runnable), progress)
    ex = executors.get(executor, jobs, threads=spec.threads, **(executor_options or {}))
    try:
        for result in ex.run(runnable, reg):
            write_run(out, result)
            results[result["summary"]["run_key"]] = result
            outcome.ran += 1
            reg.pm.hook.optbench_run_finished(summary=result["summary"])
            if bar is not None:
                s = result["summary"]
                bar.set_postfix_str(f"{s['task']} {s['optimizer']} {s['status']}", refresh=False)
                bar.update(1)
    finally:
        ex.close()
        if bar is not None:
            bar.close()

    ordered = [results[key] for _, key in items if key in results]
    outcome.summaries = [r["summary"] for r in ordered]
    write_outputs(out, ordered, spec, reg)
    outcome.seconds = time.perf_counter() - t_start
    reg.pm.hook.optbench_grid_finished(out_dir=out, summaries=outcome.summaries)
    return outcome


def write_outputs(out: Path, results: list[dict], spec: GridSpec, reg) -> None:
    # no pandas here: plain records and pyarrow keep ~0.5 s of imports out of every grid
    from optbench.aggregate import CONVERGENCE_METRICS, SPEED_METRICS, aggregate_records
    from optbench.config import block_dicts
    from optbench.meta import environment, plugin_table
    from optbench.store import records_csv

    write_tables(out, results)
    summaries = [r["summary"] for r in results]
    atomic_write_text(out / "convergence.csv", records_csv(aggregate_records(summaries, CONVERGENCE_METRICS)))
    atomic_write_text(out / "speed.csv", records_csv(aggregate_records(summaries, SPEED_METRICS)))
    tasks_used = sorted({r["summary"]["task"] for r in results})
    meta = {
        "schema": SCHEMA_VERSION,
        **environment(spec.device, out),
        "grid": {"name": spec.name, "blocks": block_dicts(spec), "device": spec.device, "threads": spec.threads,
                 "timeout": spec.timeout},
        "grid_hash": _sha(canonical_json(block_dicts(spec))),
        "plugins": plugin_table(reg),
        "tasks": {
            t: {"version": reg.tasks[t].version, "target_metric": reg.tasks[t].target_metric,
                "target_value": reg.tasks[t].target_value, "defaults": dict(reg.tasks[t].defaults)}
            for t in tasks_used if t in reg.tasks
        },
        "runs": len(results),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, default=str))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _progress_bar(total: int, progress: bool | None):
    if progress is False or total == 0:
        return None
    from tqdm import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI unless asked for
    return tqdm(total=total, unit="run", disable=None if progress is None else False, dynamic_ncols=True,
                mininterval=0.5)
