"""Keep glibc malloc from handing big tensors back to the kernel every step.

PyTorch's CPU allocator is plain ``malloc``.  glibc serves any block above
``M_MMAP_THRESHOLD`` (at most 32 MiB with the default dynamic threshold) with
a fresh ``mmap`` and ``munmap``s it on ``free``; and it gives the top of the
heap back with ``brk`` whenever more than ``M_TRIM_THRESHOLD`` is free there.
A training step allocates and frees the same large activations every time --
a small GPT's logits are ``batch x seq x 50,257`` floats, 100 MB at the
``cpu`` size -- so without tuning each step pays for the kernel to map, zero
and fault in those pages again: up to 1.9x slower on small GPTs.

Raising both thresholds makes glibc keep the memory and reuse it, the way
PyTorch's CUDA caching allocator does on a GPU.  The cost is that the process
keeps its peak footprint until it exits, which is what a benchmark worker
wants anyway.

``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment do
the same at process start; an explicit setting there, or a preloaded
allocator (jemalloc, tcmalloc, mimalloc), is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: ``mallopt`` takes an ``int``; 1 GiB covers the activations of every preset
#: that fits a CPU and is far below the 2 GiB ``int`` limit.
DEFAULT_THRESHOLD = 1 << 30
#: the largest mmap threshold glibc before 2.26 accepts (HEAP_MAX_SIZE / 2 on 64-bit)
_OLD_GLIBC_MAX = 32 << 20

_ENV = {M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_"}
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@functools.lru_cache(maxsize=None)
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc(threshold: int = DEFAULT_THRESHOLD, export: bool = True) -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds in this process; return what was set.

    With ``export`` the same settings go into ``os.environ`` so that worker
    processes started afterwards (spawned, or dask workers) get them from
    their first allocation.  A no-op (returns ``{}``) off glibc, under a
    preloaded allocator, and for each threshold the environment already sets.
    """
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in _OTHER_ALLOCATORS):
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    done = {}
    for param, env in _ENV.items():
        if env in os.environ:
            continue  # the user's explicit choice, applied by glibc at start-up
        value = threshold
        if not libc.mallopt(param, value) and param == M_MMAP_THRESHOLD:
            value = min(threshold, _OLD_GLIBC_MAX)
            if not libc.mallopt(param, value):
                continue
        done[env] = value
        if export:
            os.environ[env] = str(value)
    return done


def release_free_memory() -> None:
    """Give the pages malloc holds free back to the kernel (glibc ``malloc_trim(0)``).

    The runner calls it before each CPU run so that the run's peak-memory
    figure (resident-set growth over the run) starts from what is live, not
    from what earlier runs in the same process left cached: with the
    thresholds :func:`tune_malloc` sets, glibc otherwise keeps every freed
    activation, and a run's figure would depend on which runs came before it.
    A no-op off glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
