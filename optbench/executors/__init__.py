"""How runs are executed.  Every executor yields finished run results (dicts
from ``runner.run_one``) in any order; the grid writes each as it arrives.

An executor is built by :func:`get` and used as ``executor.run(items, reg)``
where ``items`` is a list of ``(RunConfig, key)`` and ``reg`` the registry of
the driving process (``reg.load_args`` rebuilds it in another process).
"""

from __future__ import annotations

from optbench.errors import OptbenchError

EXECUTORS = ("serial",)


def get(name: str = "serial", jobs: int = 1, **options):
    if name == "serial" and jobs <= 1:
        from optbench.executors.serial import SerialExecutor

        return SerialExecutor()
    raise OptbenchError(f"unknown executor {name!r} with --jobs {jobs}; available: {', '.join(EXECUTORS)}")
