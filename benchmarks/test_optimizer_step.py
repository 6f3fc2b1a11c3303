"""Cost of one optimizer step for every installed optimizer plugin (issue 7).

The cases and their timing live in ``optbench.speed`` / ``optbench.speed_bench``
so that ``optbench speed`` (which writes the speed CSV) and this file measure
exactly the same thing.  Examples::

    pytest benchmarks/test_optimizer_step.py                              # everything, ~1-2 min
    pytest benchmarks/test_optimizer_step.py -k "synthetic-10m and adamw"
    pytest benchmarks/ --benchmark-disable                                # smoke: each case once
"""

from optbench.speed_bench import test_step  # noqa: F401  (collected by pytest from here)
