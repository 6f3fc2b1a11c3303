"""The course's two toy problems.

``pi``: one scalar weight w, loss (w - target)^2, target pi.  The course uses it
to contrast SGD, Adam and AdamW, and to show what happens when ``zero_grad`` is
never called (gradients pile up and SGD swings around the target).

``l2-bowl``: two weights, loss sum(w^2), started where the gradient norm is 20
so that gradient clipping and learning-rate schedules visibly change the path.
"""

from __future__ import annotations

import math

import torch

import optbench
from optbench import Problem, TaskSpec


def _problem(w: torch.Tensor, loss_fn, names: list[str]) -> Problem:
    def metrics():
        # tolist() on a 1-2 element tensor costs ~1 us; per-element .item() costs more
        return dict(zip(names, w.detach().tolist()))

    return Problem(params=[w], loss=lambda micro: loss_fn(w), metrics=metrics)


def build_pi(seed: int = 0, device: str = "cpu", target: float = math.pi, init: float = 0.0, dtype="float32"):
    # seed is unused: the task is deterministic; the harness still seeds torch
    w = torch.full((1,), float(init), dtype=getattr(torch, dtype), device=device, requires_grad=True)
    t = float(target)
    return _problem(w, lambda w: ((w - t) ** 2).sum(), ["w"])


def build_l2_bowl(seed: int = 0, device: str = "cpu", w0: float = 6.0, w1: float = -8.0, dtype="float32"):
    w = torch.tensor([float(w0), float(w1)], dtype=getattr(torch, dtype), device=device, requires_grad=True)
    return _problem(w, lambda w: (w * w).sum(), ["w0", "w1"])


@optbench.hookimpl
def optbench_tasks():
    return [
        TaskSpec(
            "pi", build_pi, {"target": math.pi, "init": 0.0, "dtype": "float32"}, steps=150,
            target_metric="loss", target_value=1e-2,
            description="1 weight from 0 to pi, loss (w - pi)^2 (the course's SGD vs Adam vs AdamW)",
        ),
        TaskSpec(
            "l2-bowl", build_l2_bowl, {"w0": 6.0, "w1": -8.0, "dtype": "float32"}, steps=150,
            target_metric="loss", target_value=1e-2,
            description="2 weights, loss sum(w^2) from [6, -8] (|grad| = 20): clipping and schedules",
        ),
    ]
