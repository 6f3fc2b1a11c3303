"""Built-in learning-rate schedules.

Where ``torch.optim.lr_scheduler`` has the schedule we use it; the two with a
warm-up are pure functions of (step, total) wrapped in ``LambdaLR``, optax
style, so they can be read and tested on their own.  Every factory gets the
run's total number of optimizer steps, so schedules end where the run ends.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import lr_scheduler

import optbench
from optbench import SchedulerSpec


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: (t+1)/T_warm for t < T_warm, then 1.  Step 0 already moves."""
    return min(1.0, (step + 1) / max(1, warmup_steps))


def warmup_cosine_factor(step: int, warmup_steps: int, total: int, min_frac: float) -> float:
    """Linear warm-up, then cosine decay from 1 to ``min_frac`` at the last step."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    return min_frac + 0.5 * (1.0 - min_frac) * (1.0 + math.cos(math.pi * progress))


def _warmup_steps(total: int, warmup_frac: float) -> int:
    return max(1, round(total * warmup_frac))


def constant(optimizer, total_steps):
    return None  # no scheduler object at all: a constant rate costs nothing per step


def warmup(optimizer, total_steps, warmup_frac=0.1):
    return lr_scheduler.LambdaLR(optimizer, partial(warmup_factor, warmup_steps=_warmup_steps(total_steps, warmup_frac)))


def cosine(optimizer, total_steps, min_frac=0.0):
    eta_min = optimizer.param_groups[0]["lr"] * min_frac
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=eta_min)


def linear_decay(optimizer, total_steps, end_frac=0.0):
    return lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=end_frac, total_iters=max(1, total_steps))


def warmup_cosine(optimizer, total_steps, warmup_frac=0.1, min_frac=0.0):
    fn = partial(warmup_cosine_factor, warmup_steps=_warmup_steps(total_steps, warmup_frac), total=total_steps,
                 min_frac=min_frac)
    return lr_scheduler.LambdaLR(optimizer, fn)


def step(optimizer, total_steps, every_frac=1 / 3, gamma=0.1):
    return lr_scheduler.StepLR(optimizer, step_size=max(1, round(total_steps * every_frac)), gamma=gamma)


@optbench.hookimpl
def optbench_schedulers():
    return [
        SchedulerSpec("constant", constant, {}, "the optimizer's lr, unchanged"),
        SchedulerSpec("warmup", warmup, {"warmup_frac": 0.1}, "linear warm-up over the first warmup_frac of steps"),
        SchedulerSpec("cosine", cosine, {"min_frac": 0.0}, "cosine decay to min_frac * lr (CosineAnnealingLR)"),
        SchedulerSpec("linear-decay", linear_decay, {"end_frac": 0.0}, "linear decay to end_frac * lr (LinearLR)"),
        SchedulerSpec("warmup-cosine", warmup_cosine, {"warmup_frac": 0.1, "min_frac": 0.0},
                      "linear warm-up, then cosine decay"),
        SchedulerSpec("step", step, {"every_frac": 1 / 3, "gamma": 0.1}, "multiply lr by gamma every every_frac of steps"),
    ]
