"""Benchmarks of optbench (not part of the default test run: pyproject's testpaths is tests/).

    pytest benchmarks/                          # time everything (a few minutes)
    pytest benchmarks/ --benchmark-disable      # smoke test: every benchmark body runs once
    pytest benchmarks/ --benchmark-json=out.json
"""

# pytest-benchmark's machine_info without py-cpuinfo (~1.4 s to name the CPU here)
from optbench.speed import pytest_benchmark_generate_machine_info  # noqa: F401
