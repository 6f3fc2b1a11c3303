"""pytest-benchmark module behind ``optbench speed`` and ``benchmarks/test_optimizer_step.py``.

One benchmark per case of :func:`optbench.speed.cases`: every installed
optimizer (each fused/foreach/for-loop variant it declares), the clipping
rows and the pure-Python reference steps, on every parameter set.  The
selection comes from the ``OPTBENCH_SPEED`` environment variable that
``optbench speed`` sets (default: everything); with pytest directly, narrow
it with ``-k`` (``pytest benchmarks/ -k "synthetic-10m and adamw"``).

Run with ``--benchmark-disable`` every case still runs once (a smoke test).
"""

from __future__ import annotations

import pytest

from optbench import registry, speed

_SEL = speed.Selection.from_env()
_REG = registry.load(_SEL.plugins, _SEL.plugin_dirs)
if _SEL.threads:
    import torch

    torch.set_num_threads(_SEL.threads)
_CASES = speed.cases(_REG, _SEL)


@pytest.mark.parametrize("case", _CASES, ids=[c.id for c in _CASES])
def test_step(benchmark, case, request):
    cfg = request.config
    try:
        speed.run_case(benchmark, case, _REG, _SEL.device,
                       max_time=float(cfg.getoption("benchmark_max_time", 1.0) or 1.0),
                       min_rounds=int(cfg.getoption("benchmark_min_rounds", 5) or 5))
    except (speed.Skip, speed.ParamSetUnavailable) as exc:
        speed.record_problem(case, "skipped", str(exc))
        pytest.skip(str(exc))
    except Exception as exc:  # a plugin that cannot run the variant it declares: a real failure
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        speed.record_problem(case, "failed", reason)
        raise
