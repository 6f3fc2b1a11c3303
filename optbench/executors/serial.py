"""Run every grid cell in this process, one after another."""

from __future__ import annotations

from optbench.runner import run_one


class SerialExecutor:
    name = "serial"

    def run(self, items, reg):
        for rc, key in items:
            yield run_one(rc, reg, key)

    def close(self) -> None:
        pass
