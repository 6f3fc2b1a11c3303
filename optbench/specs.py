"""The three kinds of spec a plugin hands to optbench.

Specs are plain frozen dataclasses: a plugin builds them at import time, the
harness only reads them.  Everything a run needs is reachable from a spec, so a
run can be rebuilt in another process from names alone (see ``runner.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

#: Capabilities an optimizer may declare.  The harness honours each one:
#: ``closure``       step() must be given a closure that re-evaluates the loss (LBFGS, SAM);
#: ``train_eval``    optimizer has .train()/.eval() that must follow the model (schedule-free);
#: ``create_graph``  backward(create_graph=True) is needed (second-order methods);
#: ``fused``/``foreach``  the factory accepts these torch flags.
CAPABILITIES = frozenset({"closure", "train_eval", "create_graph", "fused", "foreach"})


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer plugin: ``factory(params, **hparams) -> torch.optim.Optimizer``.

    ``defaults`` are the hyper-parameters a run gets unless the grid sets them;
    its keys are also the set of hyper-parameters the grid may set.  ``grid`` is
    a suggested search space (``{"lr": [1e-3, 1e-2]}``).  Bump ``version`` when
    the spec changes behaviour so cached results are not reused.
    """

    name: str
    factory: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    description: str = ""
    version: str = "1"
    capabilities: frozenset = frozenset()
    #: tasks this optimizer cannot run, with the reason (``{"pi": "needs >1 param"}``)
    unsupported: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        unknown = self.capabilities - CAPABILITIES
        if unknown:
            raise ValueError(
                f"optimizer {self.name!r} declares unknown capabilities {sorted(unknown)}; "
                f"known: {sorted(CAPABILITIES)}"
            )


@dataclass(frozen=True)
class SchedulerSpec:
    """A learning-rate schedule: ``factory(optimizer, total_steps, **params)``.

    The factory returns a ``torch.optim.lr_scheduler.LRScheduler`` (stepped once
    per optimizer step) or ``None`` for a constant rate, which lets the harness
    skip scheduler overhead entirely.
    """

    name: str
    factory: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    version: str = "1"


@dataclass
class Problem:
    """One instantiated task, built fresh for every run.

    ``loss(micro)`` runs the forward pass on the next micro-batch and returns a
    scalar tensor; the harness calls backward on it.  ``metrics()`` is read after
    every optimizer step and should be cheap (toy tasks report their weights).
    ``evaluate()`` is read every ``eval_every`` steps and after the last one,
    with ``modules`` switched to eval mode (held-out loss of a language model).
    """

    params: Any
    loss: Callable[[int], Any]
    metrics: Callable[[], Mapping[str, float]] | None = None
    evaluate: Callable[[], Mapping[str, float]] | None = None
    modules: Sequence[Any] = ()
    #: tokens consumed by one micro-batch; 0 for tasks that are not about tokens
    tokens_per_micro: int = 0
    #: fp32 FLOPs of one micro-batch forward+backward, for the fraction-of-peak column
    flops_per_micro: float = 0.0


@dataclass(frozen=True)
class TaskSpec:
    """A task plugin: ``build(seed=..., device=..., **params) -> Problem``.

    ``defaults`` are the task's parameters (and the set the grid may set);
    ``steps`` the default number of optimizer steps.  A run *reaches the
    target* the first step ``target_metric`` (a column of the per-step
    records, e.g. ``loss`` or ``val_loss``) is at or below ``target_value``.
    A run *diverges* when its loss is not finite or exceeds
    ``divergence_factor`` times its first loss.
    """

    name: str
    build: Callable[..., Problem]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 100
    target_metric: str = "loss"
    target_value: float | None = None
    divergence_factor: float = 1e4
    eval_every: int = 0
    description: str = ""
    version: str = "1"
    #: ``prepare(**params)`` runs once per distinct parameter set in the driving
    #: process before any run (download data, fill caches) so that workers never
    #: race for it.  Raising ``OptbenchError`` skips that task's runs with the
    #: error's one line as the reason; the rest of the grid runs.
    prepare: Callable[..., None] | None = None
