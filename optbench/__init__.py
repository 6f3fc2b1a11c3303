"""optbench: a plugin-based benchmarking suite for PyTorch optimizers."""

import pluggy

from optbench.specs import OptimizerSpec, Problem, SchedulerSpec, TaskSpec

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("optbench")

__all__ = ["OptimizerSpec", "Problem", "SchedulerSpec", "TaskSpec", "hookimpl", "__version__"]
