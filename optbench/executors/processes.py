"""Run grid cells in a pool of long-lived local worker processes (``--jobs N``).

Why not ``multiprocessing.Pool`` or ``ProcessPoolExecutor``: neither can kill
the one worker whose run hangs, and a worker killed by the OS breaks the whole
pool.  Here each worker has its own pipe, so the parent knows exactly which
run each worker holds and can end it without touching the others.

What makes parallelism pay (benchopt's ``-j 2`` was slower than ``-j 1``):

* workers start once and keep torch, the registry and the plugins imported.
  They fork from a ``forkserver`` that imported torch once (plain ``fork`` of
  the grid process is unsafe once torch has started threads), so the import
  is paid once, not once per worker, and a replacement worker starts in
  milliseconds;
* runs travel in batches and the next batch is queued while the current run
  trains, so a worker never waits for the parent between runs; batches shrink
  as the grid drains so that no worker sits idle at the end while another
  still has a queue;
* each worker gets ``cores // jobs`` torch threads, so workers x threads =
  cores instead of every worker spinning up one thread per core.

Faults stay inside their run: the parent kills a worker whose run overran
``--timeout`` plus a grace period (a step that never returns cannot be caught
inside the run loop) and records ``timeout``; a worker the OS killed (the
OOM killer sends SIGKILL) costs only the run it held, recorded as ``failed``.
Either way a fresh worker takes over the queue and the grid goes on.

Scripts that call ``run_grid(..., jobs=N)`` need the usual ``if __name__ ==
"__main__":`` guard: workers import the main module, as with ``spawn``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import wait

from optbench.errors import OptbenchError
from optbench.executors import lost_result, run_guarded, settle

#: thread-pool sizes read by torch's OpenMP/MKL and by numpy's BLAS when they load
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: largest batch sent to a worker at once; batches shrink towards 1 as the grid drains
MAX_CHUNK = 16


def cores() -> int:
    """CPUs this process may use (respects taskset, cgroups cpusets and SLURM allocations)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def grace_seconds(timeout: float) -> float:
    """Extra time before the parent kills a run that overran ``timeout``.

    The run loop stops a slow run itself at the end of the first step past the
    deadline, and keeps its curve; the kill is only for a step, build or
    evaluation that never returns, so the margin covers one long step.
    """
    return max(2.0, 0.25 * timeout)


#: imported once by the forkserver, so that every worker forks with them loaded.
#: Plugins are not among them: each worker imports those itself, so that an
#: edited plugin is never run from a stale copy under its new cache key.
_PRELOAD = ["torch", "torch._dynamo", "torch.optim", "optbench.runner", "optbench.registry",
            "optbench.executors.processes"]


def _context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:  # Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # no effect once the forkserver runs
    return ctx


def start_forkserver() -> None:
    """Start the forkserver (it imports torch in the background) if not running."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def setup_worker(threads: int | None) -> None:
    """Per-process set-up shared by local and Dask workers: threads, malloc, warm-up."""
    import torch

    from optbench.malloc import tune_malloc

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    # glibc would otherwise munmap large activations on free and fault them
    # in again next step (up to 1.9x on small GPTs); see optbench.malloc.
    tune_malloc()
    # The first optimizer a process builds imports torch._dynamo (seconds);
    # pay that here, not inside the first run and its --timeout.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies; the forkserver
    exits when the grid process does, even by ``kill -9``, so orphans never
    train on holding cores with nowhere to send their results."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(conn, env: dict, load_args: tuple, threads: int, max_memory: int | None) -> None:
    """Worker process: build everything once, then run batches until told to stop."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The forkserver's environment dates from its start; plugins and tasks
    # read the grid process's current one (OPTBENCH_CACHE, HF_* ...).
    os.environ.clear()
    os.environ.update(env)
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    try:
        setup_worker(threads)
        from optbench import registry

        reg = registry.load_cached(load_args)
        if max_memory:
            import resource

            used = _address_space()
            if max_memory < used + 2**28:
                raise MemoryError(f"--max-memory {max_memory / 2**30:.2g} GiB leaves no room: a worker uses "
                                  f"{used / 2**30:.2f} GiB of address space before its first run")
            # Address space, not RSS: a runaway allocation then fails inside the
            # run with a MemoryError instead of summoning the OOM killer.
            resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    except BaseException:
        import traceback

        text = traceback.format_exc()
        print(text, file=sys.stderr)
        conn.send(("init_error", text.strip().splitlines()[-1]))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            batch = conn.recv()
        except EOFError:  # the parent is gone
            return
        if batch is None:
            # Skip the interpreter's teardown (torch's takes most of a second):
            # everything this worker produced is already in the pipe.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        for rc, key in batch:
            conn.send(("done", key, run_guarded(rc, reg, key)))


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class _Worker:
    """The parent's view of one worker: its process, pipe and queue of sent runs."""

    def __init__(self, proc, conn):
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.gone = False  # the pipe reached EOF: the process exited or is exiting
        #: runs sent and not yet returned, in the order the worker runs them
        self.queue: deque = deque()
        #: when the head of the queue started (the worker runs its queue in order,
        #: so a run starts when the previous result arrives or when it was sent to
        #: an idle worker)
        self.head_since = 0.0

    def send(self, batch: list) -> None:
        if not self.queue:
            self.head_since = time.monotonic()
        self.queue.extend(batch)
        self.conn.send(batch)

    def deadline(self) -> float:
        """When the run at the head of the queue must be killed; inf without a timeout."""
        if not self.queue or not self.ready:
            return math.inf
        rc = self.queue[0][0]
        if not rc.timeout:
            return math.inf
        return self.head_since + rc.timeout + grace_seconds(rc.timeout)


class ProcessExecutor:
    name = "processes"

    def __init__(self, jobs: int = 1, *, threads: int | None = None, max_memory: float | None = None,
                 chunk: int | None = None):
        """``threads``: torch threads per worker (default cores // jobs);
        ``max_memory``: GiB of address space per worker; ``chunk``: fixed batch
        size instead of the shrinking default."""
        if jobs < 1:
            raise OptbenchError(f"--jobs {jobs}: give at least 1 worker")
        if max_memory is not None and max_memory <= 0:
            raise OptbenchError(f"--max-memory {max_memory:g}: give a positive number of GiB")
        self.jobs = jobs
        self.threads = threads or max(1, cores() // jobs)
        self.max_memory = int(max_memory * 2**30) if max_memory else None
        self.chunk = chunk
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._load_args: tuple = ()

    # ------------------------------------------------------------------ pool

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, name="optbench-worker", daemon=True,
            args=(child_conn, dict(os.environ), self._load_args, self.threads, self.max_memory),
        )
        proc.start()
        child_conn.close()  # so that the parent sees EOF when the worker dies
        w = _Worker(proc, parent_conn)
        self._workers.append(w)
        return w

    def _retire(self, w: _Worker, kill: bool) -> None:
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        w.conn.close()
        self._workers.remove(w)

    def _batch_size(self, pending: int) -> int:
        # Guided scheduling: big batches while much is left (fewer messages),
        # single runs at the end (no worker idles while another holds a queue).
        if self.chunk:
            return self.chunk
        return max(1, min(MAX_CHUNK, pending // (4 * self.jobs)))

    def _feed(self, w: _Worker, pending: deque) -> None:
        # Keep one batch queued behind the run in progress, so the worker moves
        # straight on to its next run while the parent writes the last result;
        # but never queue runs that a worker with nothing to do could start now.
        while pending and len(w.queue) <= 1:
            if w.queue and len(pending) <= sum(1 for o in self._workers if o is not w and not o.queue):
                return
            n = self._batch_size(len(pending))
            w.send([pending.popleft() for _ in range(min(n, len(pending)))])

    # ------------------------------------------------------------------ run

    def run(self, items, reg):
        pending = deque(items)
        if not pending:
            return
        self._load_args = reg.load_args
        for _ in range(min(self.jobs, len(pending))):
            self._spawn()
        while self._workers:
            for w in self._workers:
                if w.ready:
                    self._feed(w, pending)
            deadline = min(w.deadline() for w in self._workers)
            wait_s = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
            by_handle = {}
            for w in self._workers:
                by_handle[w.conn] = by_handle[w.proc.sentinel] = w
            for w in dict.fromkeys(by_handle[h] for h in wait(list(by_handle), wait_s)):
                yield from self._receive(w, reg)
                if w.gone or not w.proc.is_alive():
                    yield from self._bury(w, reg, pending)
            now = time.monotonic()
            for w in [w for w in self._workers if w.deadline() <= now]:
                yield self._timed_out(w, reg, now)
                self._requeue(w, pending)
                self._retire(w, kill=True)
                if pending:
                    self._spawn()
            # Workers with nothing left to do exit at once, freeing their memory
            # while the last runs finish elsewhere.
            if not pending:
                for w in [w for w in self._workers if w.ready and not w.queue]:
                    self._stop(w)

    def _receive(self, w: _Worker, reg):
        """Yield every result the worker has sent; note readiness and EOF."""
        while not w.gone:
            try:
                if not w.conn.poll():
                    return
                msg = w.conn.recv()
            except (EOFError, OSError):
                w.gone = True
                return
            if msg[0] == "ready":
                w.ready = True
            elif msg[0] == "done":
                _, key, result = msg
                # Workers run their queue in order, so this is the head.
                rc, head = w.queue.popleft()
                assert head == key, f"worker returned run {key} while running {head}"
                w.head_since = time.monotonic()
                yield settle(result, rc, reg, key, self.threads)
            elif msg[0] == "init_error":
                self.close()
                raise OptbenchError(
                    f"a worker process could not start: {msg[1]} (traceback above); "
                    f"the same error would stop --jobs 1, so fix it there first")

    def _bury(self, w: _Worker, reg, pending: deque):
        """A worker exited on its own: blame the run it held, then replace it."""
        w.proc.join(5)
        if not w.ready:
            self.close()
            raise OptbenchError(f"a worker process died while starting ({_how_it_died(w.proc.exitcode)}); "
                                f"try --jobs 1 to see the error")
        if w.queue:
            rc, key = w.queue.popleft()
            yield lost_result(rc, reg, key, "failed", _how_it_died(w.proc.exitcode), self.threads)
        self._requeue(w, pending)
        self._retire(w, kill=False)
        if pending:
            self._spawn()

    def _timed_out(self, w: _Worker, reg, now: float) -> dict:
        rc, key = w.queue.popleft()
        return lost_result(
            rc, reg, key, "timeout",
            f"no result {now - w.head_since:.0f} s after it started (--timeout {rc.timeout:g} s); its worker "
            f"was killed: a step, the task's build or its evaluation never returned", self.threads)

    @staticmethod
    def _requeue(w: _Worker, pending: deque) -> None:
        """Runs queued on a lost worker that had not started go back first in line."""
        pending.extendleft(reversed(w.queue))
        w.queue.clear()

    def _stop(self, w: _Worker) -> None:
        try:
            w.conn.send(None)
        except OSError:
            pass
        self._retire(w, kill=False)

    def close(self) -> None:
        """Stop idle workers politely and kill busy ones (an interrupted grid)."""
        for w in list(self._workers):
            if w.queue or not w.ready:
                self._retire(w, kill=True)
            else:
                self._stop(w)


def _how_it_died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        hint = ", out of memory?" if sig == signal.SIGKILL else ""
        return f"worker process died (signal {sig} {name}{hint})"
    return f"worker process exited with code {exitcode} during the run"
