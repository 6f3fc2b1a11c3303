"""Run grid cells on Dask distributed (``--executor dask``).

Without ``--scheduler`` a LocalCluster of ``--jobs`` single-threaded worker
processes is started for the grid and closed after it; with ``--scheduler
ADDRESS`` the runs go to an existing cluster (``dask scheduler`` plus ``dask
worker`` processes, or dask-jobqueue on SLURM: see docs/cluster.md).  Every
worker needs optbench, torch and the grid's plugins installed; the registry
is rebuilt once per worker process from the same plugin arguments.

Runs travel in batches, at most two per worker thread at a time, and batches
shrink as the grid drains.  Results come back per batch, so a killed grid
process loses at most the batches in flight.  If a batch fails as a whole
(Dask raises ``KilledWorker`` after a run crashed its worker a few times, e.g.
out of memory), its runs are retried one per task, so only the culprit is
recorded as failed.

A run's ``--timeout`` is enforced by the run loop between steps; unlike the
``processes`` executor, a step that never returns cannot be stopped from
here (Dask cannot kill one task), so it holds its worker until the cluster's
own limits (e.g. ``dask worker --lifetime``) end it.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

from optbench.errors import OptbenchError
from optbench.executors import lost_result, run_guarded, settle

_PER_THREAD = 2  # batches in flight per worker thread: one running, one waiting


def _run_batch(batch: list, load_args: tuple, threads: int | None) -> list[dict]:
    """Task executed on a Dask worker: run a batch with the worker's registry."""
    reg = _worker_registry(load_args, threads)
    return [run_guarded(rc, reg, key) for rc, key in batch]


_READY: dict = {}


def _worker_registry(load_args: tuple, threads: int | None):
    """Set the worker process up once (threads, malloc) and build its registry."""
    from optbench import registry
    from optbench.executors.processes import setup_worker

    if _READY.get("threads", -1) != threads:
        setup_worker(threads)
        _READY["threads"] = threads
    return registry.load_cached(load_args)


def _where() -> tuple[str, int]:
    import os
    import socket

    return socket.gethostname(), os.getpid()


class DaskExecutor:
    name = "dask"

    def __init__(self, jobs: int = 1, *, scheduler_address: str | None = None, threads: int | None = None,
                 max_memory: float | None = None, chunk: int | None = None, connect_timeout: float = 20.0):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise OptbenchError("--executor dask needs Dask: pip install 'optbench[dask]'") from None
        if scheduler_address and max_memory:
            raise OptbenchError("--max-memory applies to the LocalCluster optbench starts; for a cluster at "
                                "--scheduler, set it where the workers start (dask worker --memory-limit)")
        if jobs < 1:
            raise OptbenchError(f"--jobs {jobs}: give at least 1 worker")
        self.jobs = jobs
        self.address = scheduler_address
        self.max_memory = max_memory
        self.chunk = chunk
        self.connect_timeout = connect_timeout
        if scheduler_address:
            # Someone else's cluster: its worker layout (processes x threads, and the
            # OMP_NUM_THREADS=1 that Dask's nanny sets) decides torch threads unless asked.
            self.threads = threads
        else:
            from optbench.executors.processes import cores

            self.threads = threads or max(1, cores() // jobs)
        self.client = None
        self.cluster = None

    def _connect(self):
        from distributed import Client, LocalCluster

        if self.address:
            try:
                self.client = Client(self.address, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise OptbenchError(f"cannot reach the Dask scheduler at {self.address}: {exc}; start it with "
                                    f"`dask scheduler` (see docs/cluster.md) or drop --scheduler") from None
        else:
            memory = int(self.max_memory * 2**30) if self.max_memory else "auto"
            self.cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                        memory_limit=memory, dashboard_address=":0",
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)

    def _check_layout(self) -> None:
        """Warn when runs would share a process: torch's random state and thread
        pool are per process, so such runs are neither reproducible nor timed alone."""
        threads = self.client.nthreads()
        if not threads:
            return  # no workers yet (an adaptive cluster); docs/cluster.md says how to start them
        where = self.client.run(_where)
        shared = len(set(where.values())) < len(where)
        if shared or max(threads.values()) > 1:
            warnings.warn(
                f"the Dask workers at {self.address} run several tasks in one process "
                f"({'workers share a process' if shared else f'up to {max(threads.values())} threads per worker'}); "
                f"seeding is per process, so curves may not be reproducible. Start workers with --nthreads 1 "
                f"(processes, not threads) and pass --threads for torch threads per run", stacklevel=3)

    def _slots(self) -> int:
        """Worker threads in the cluster now (it may grow or shrink under us)."""
        return max(1, sum(self.client.nthreads().values()))

    def _batch_size(self, pending: int, slots: int) -> int:
        if self.chunk:
            return self.chunk
        return max(1, min(16, pending // (4 * slots)))

    def run(self, items, reg):
        from distributed import as_completed

        pending = list(reversed(items))  # pop() from the end keeps grid order
        if not pending:
            return
        if self.client is None:
            self._connect()
            if self.address:
                self._check_layout()
        # Workers start elsewhere: --plugin-dir folders must not depend on our cwd.
        plugins, plugin_dirs, *rest = reg.load_args or ((), ())
        load_args = (plugins, tuple(str(Path(d).resolve()) for d in plugin_dirs), *rest)
        futures: dict = {}
        done = as_completed()
        slots, slots_at = self._slots(), time.monotonic()

        def submit(batch):
            f = self.client.submit(_run_batch, batch, load_args, self.threads, pure=False)
            futures[f] = batch
            done.add(f)

        def top_up():
            nonlocal slots, slots_at
            if time.monotonic() - slots_at > 5:  # adaptive clusters add and remove workers
                slots, slots_at = self._slots(), time.monotonic()
            while pending and len(futures) < _PER_THREAD * slots:
                n = self._batch_size(len(pending), slots)
                submit([pending.pop() for _ in range(min(n, len(pending)))])

        top_up()
        for f in done:
            batch = futures.pop(f)
            try:
                results = f.result()
            except Exception as exc:
                if len(batch) > 1:  # find the culprit: one run per task
                    for item in batch:
                        submit([item])
                else:
                    rc, key = batch[0]
                    yield lost_result(rc, reg, key, "failed", _dask_reason(exc), self.threads)
            else:
                for (rc, key), result in zip(batch, results):
                    yield settle(result, rc, reg, key, self.threads)
            finally:
                f.release()
            top_up()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


def _dask_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return ("a Dask worker process died running it, also when run alone (KilledWorker: out of memory, "
                "or the run crashed the process)")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"dask: {name}: {text}"[:500]
