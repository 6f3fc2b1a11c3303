"""How runs are executed.  Every executor yields finished run results (dicts
from ``runner.run_one``) in any order; the grid writes each as it arrives.

An executor is built by :func:`get` and used as ``executor.run(items, reg)``
where ``items`` is a list of ``(RunConfig, key)`` and ``reg`` the registry of
the driving process (``reg.load_args`` rebuilds it in another process).

``serial``     in this process, one run after another (``--jobs 1``)
``processes``  ``--jobs N`` long-lived local worker processes (the default for N > 1)
``dask``       Dask distributed: a LocalCluster of N workers, or the cluster
               at ``--scheduler ADDRESS`` (see docs/cluster.md)
"""

from __future__ import annotations

from optbench.errors import OptbenchError

EXECUTORS = ("serial", "processes", "dask")


def get(name: str | None = None, jobs: int = 1, *, threads: int | None = None, max_memory: float | None = None,
        scheduler_address: str | None = None, **options):
    """The executor ``name`` (None: ``processes`` when ``jobs > 1``, else ``serial``).

    ``threads`` are torch threads per run (default: cores // jobs in worker
    processes), ``max_memory`` GiB of address space per worker process, and
    ``scheduler_address`` the Dask scheduler to use instead of a LocalCluster.
    Nothing starts until ``run`` is called.
    """
    if jobs < 1:
        raise OptbenchError(f"--jobs {jobs}: give at least 1")
    if name is None:
        name = "dask" if scheduler_address else "processes" if jobs > 1 or max_memory else "serial"
    if scheduler_address and name != "dask":
        raise OptbenchError(f"--scheduler is for the dask executor; add --executor dask (got --executor {name})")
    if name == "serial":
        if jobs > 1:
            raise OptbenchError(f"--executor serial runs one run at a time; drop --jobs {jobs} "
                                f"or use --executor processes")
        if max_memory:
            raise OptbenchError("--max-memory caps worker processes; add --executor processes (or --jobs N)")
        from optbench.executors.serial import SerialExecutor

        return SerialExecutor()
    if name == "processes":
        from optbench.executors.processes import ProcessExecutor

        return ProcessExecutor(jobs, threads=threads, max_memory=max_memory, **options)
    if name == "dask":
        from optbench.executors.dask import DaskExecutor

        return DaskExecutor(jobs, threads=threads, max_memory=max_memory, scheduler_address=scheduler_address,
                            **options)
    raise OptbenchError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")


def prestart(executor: str | None = None, jobs: int = 1, executor_options: dict | None = None) -> None:
    """Start the worker pool's forkserver now, so that its import of torch runs
    alongside the caller's own (the CLI calls this before importing the grid)."""
    if executor == "processes" or (executor is None and (jobs > 1 or (executor_options or {}).get("max_memory"))):
        from optbench.executors.processes import start_forkserver

        start_forkserver()


def lost_result(rc, reg, key: str, status: str, reason: str, threads: int | None = None) -> dict:
    """The result of a run whose worker was lost (killed for a timeout, or died):
    no records, only why.  Shaped like ``run_one``'s so tables treat it alike."""
    from optbench.runner import _summary_base
    from optbench.schema import SCHEMA_VERSION

    summary = _summary_base(rc, reg, key)
    summary.update(status=status, reason=reason, steps=0)
    if threads:
        summary["threads"] = threads  # the worker's, not this process's
    return {"schema": SCHEMA_VERSION, "config": rc.as_dict(), "summary": summary, "records": {},
            "traceback": None}


def run_guarded(rc, reg, key: str) -> dict:
    """``run_one`` for a worker: a problem outside the run itself (a plugin that
    is not installed where the worker runs, an optbench bug) comes back as
    ``{"lost": reason}`` instead of killing the worker or a whole batch."""
    import socket

    from optbench.runner import run_one

    missing = [f"{kind} {name!r}" for kind, name in (("task", rc.task), ("optimizer", rc.optimizer),
                                                      ("scheduler", rc.scheduler)) if name not in reg.table(kind)]
    if missing:
        return {"lost": f"{' and '.join(missing)} not installed on the worker's machine ({socket.gethostname()}); "
                        f"install the plugin wherever workers run"}
    try:
        return run_one(rc, reg, key)
    except Exception as exc:
        return {"lost": f"optbench failed outside the run: {type(exc).__name__}: {exc}"}


def settle(result: dict, rc, reg, key: str, threads: int | None) -> dict:
    """A worker's answer as a run result, in the driving process."""
    if "lost" in result:
        return lost_result(rc, reg, key, "failed", result["lost"], threads)
    return result
