"""Built-in schedules: the pure factor functions and the torch objects they drive."""

from __future__ import annotations

import math

import pytest
import torch

from optbench_plugins.schedulers import warmup_cosine_factor, warmup_factor


def lrs(reg, name, total=100, lr=1.0, **params):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = reg.schedulers[name].factory(opt, total, **{**reg.schedulers[name].defaults, **params})
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_warmup_factor():
    assert warmup_factor(0, 10) == pytest.approx(0.1)
    assert warmup_factor(9, 10) == 1.0 and warmup_factor(50, 10) == 1.0


def test_warmup_cosine_factor_endpoints():
    assert warmup_cosine_factor(4, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(55, 10, 100, 0.0) == pytest.approx(0.5)


def test_constant_has_no_scheduler_object(reg):
    assert lrs(reg, "constant", lr=0.3) == [0.3] * 100


def test_cosine_and_linear_decay_follow_their_formulas(reg):
    cos = lrs(reg, "cosine")
    lin = lrs(reg, "linear-decay")
    for t in (0, 25, 50, 99):
        assert cos[t] == pytest.approx(0.5 * (1 + math.cos(math.pi * t / 100)), abs=1e-6)
        assert lin[t] == pytest.approx(1 - t / 100, abs=1e-6)


def test_step_and_warmup(reg):
    st = lrs(reg, "step", total=90)
    assert st[0] == 1.0 and st[30] == pytest.approx(0.1) and st[60] == pytest.approx(0.01)
    wu = lrs(reg, "warmup", warmup_frac=0.2)
    assert wu[0] == pytest.approx(0.05) and wu[19] == pytest.approx(1.0) and wu[-1] == 1.0
    wc = lrs(reg, "warmup-cosine")
    assert max(wc) == pytest.approx(1.0) and wc.index(max(wc)) == 9 and wc[-1] < 0.01
