"""The step loop reproduces the course's numbers and records what it promises."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.gridspec import GridBlock, GridSpec, expand
from optbench.runner import clip_, grad_norm, oscillations, run_one


def one(reg, **block):
    configs = expand(GridSpec([GridBlock(**block)]), reg)
    assert len(configs) == 1
    return run_one(configs[0], reg)


def final_w(result):
    return result["records"]["w"][-1]


@pytest.mark.parametrize(
    "optimizer, hparams, expected",
    [
        ("sgd", {"lr": [0.01]}, 2.98987),
        ("adam", {"lr": [0.01]}, 1.34542),
        ("adamw", {"lr": [0.01], "weight_decay": [0.01]}, 1.33607),
    ],
)
def test_pi_matches_the_course(reg, optimizer, hparams, expected):
    r = one(reg, tasks=["pi"], optimizers=[optimizer], hparams={optimizer: hparams})
    assert r["summary"]["status"] == "ok"
    assert r["summary"]["steps"] == 150
    assert final_w(r) == pytest.approx(expected, abs=1e-4)


def test_pi_sgd_closed_form(reg):
    # w_t = pi (1 - (1 - 2 lr)^t): the whole curve, not just the end point
    r = one(reg, tasks=["pi"], optimizers=["sgd"], hparams={"sgd": {"lr": [0.01]}})
    ws = r["records"]["w"]
    for t in (1, 10, 75, 150):
        assert ws[t - 1] == pytest.approx(math.pi * (1 - 0.98**t), abs=1e-4)


def test_never_zero_grad_makes_sgd_swing_and_adam_stay_calm(reg):
    sgd = one(reg, tasks=["pi"], optimizers=["sgd"], grad_modes=["never"], hparams={"sgd": {"lr": [0.01]}})
    adam = one(reg, tasks=["pi"], optimizers=["adam"], grad_modes=["never"], hparams={"adam": {"lr": [0.01]}})
    ws = sgd["records"]["w"]
    assert final_w(sgd) == pytest.approx(5.5717, abs=1e-3)
    assert min(ws) > -0.1 and max(ws) == pytest.approx(2 * math.pi, abs=0.05)  # swings over about [0, 2 pi]
    assert sgd["summary"]["oscillations"] >= 4
    assert final_w(adam) == pytest.approx(2.056, abs=1e-3)
    assert max(adam["records"]["w"]) < 2 * math.pi - 1


def test_clip_one_bounds_every_sgd_step_by_lr(reg):
    lr = 0.1
    r = one(reg, tasks=["l2-bowl"], optimizers=["sgd"], clip=[1.0], hparams={"sgd": {"lr": [lr]}})
    w0, w1 = [6.0, *r["records"]["w0"]], [-8.0, *r["records"]["w1"]]
    moves = [math.hypot(a1 - a0, b1 - b0) for a0, a1, b0, b1 in zip(w0, w0[1:], w1, w1[1:])]
    assert max(moves) <= lr * (1 + 1e-6)
    assert moves[0] == pytest.approx(lr, rel=1e-5)  # |grad| = 20 at the start: clipped to 1
    assert r["records"]["grad_norm"][0] == pytest.approx(20.0)  # recorded before clipping
    unclipped = one(reg, tasks=["l2-bowl"], optimizers=["sgd"], hparams={"sgd": {"lr": [lr]}})
    assert unclipped["records"]["w0"][0] == pytest.approx(6.0 * (1 - 2 * lr))


def test_clip_matches_torch_clip_grad_norm(reg):
    torch.manual_seed(0)
    ps = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    for p in ps:
        p.grad = torch.randn_like(p) * 10
    ref = [p.grad.clone() for p in ps]
    twins = [torch.nn.Parameter(torch.zeros_like(g)) for g in ref]
    for t, g in zip(twins, ref):
        t.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(twins, 1.0)
    for small in (True, False):
        assert grad_norm(ps, small) == pytest.approx(total.item(), rel=1e-6)
    clip_(ps, grad_norm(ps, False), 1.0)
    for p, t in zip(ps, twins):
        assert torch.allclose(p.grad, t.grad, rtol=1e-6)


def test_accumulation_averages_micro_batches(reg):
    # on a deterministic task, k-step accumulation of loss/k equals one plain step
    plain = one(reg, tasks=["pi"], optimizers=["sgd"], hparams={"sgd": {"lr": [0.01]}}, steps=20)
    acc = one(reg, tasks=["pi"], optimizers=["sgd"], grad_modes=["accum4"], hparams={"sgd": {"lr": [0.01]}},
              steps=20)
    assert acc["records"]["w"] == pytest.approx(plain["records"]["w"], abs=1e-6)
    assert acc["records"]["loss"] == pytest.approx(plain["records"]["loss"], abs=1e-5)


def test_schedule_lr_is_recorded_per_step(reg):
    r = one(reg, tasks=["l2-bowl"], optimizers=["sgd"], schedulers=["warmup"], hparams={"sgd": {"lr": [0.1]}},
            steps=100)
    lrs = r["records"]["lr"]
    assert lrs[0] == pytest.approx(0.01)  # (0 + 1) / 10 warm-up steps
    assert lrs[9] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.1)
    assert all(a <= b + 1e-12 for a, b in zip(lrs, lrs[1:]))


def test_divergence_ends_the_run(reg):
    r = one(reg, tasks=["l2-bowl"], optimizers=["sgd"], hparams={"sgd": {"lr": [5.0]}})
    s = r["summary"]
    assert s["status"] == "diverged"
    assert "first loss" in s["reason"]
    assert s["steps"] < 150


def test_same_seed_same_curves(reg):
    a = one(reg, tasks=["pi"], optimizers=["adam"], hparams={"adam": {"lr": [0.05]}}, seeds=[3])
    b = one(reg, tasks=["pi"], optimizers=["adam"], hparams={"adam": {"lr": [0.05]}}, seeds=[3])
    assert a["records"]["loss"] == b["records"]["loss"]
    assert a["records"]["w"] == b["records"]["w"]


def test_summary_fields(reg):
    r = one(reg, tasks=["pi"], optimizers=["adam"], hparams={"adam": {"lr": [0.1]}})
    s = r["summary"]
    assert s["status"] == "ok"
    assert s["best_loss"] <= s["final_loss"]
    assert 1 <= s["steps_to_target"] <= 150
    assert s["time_to_target"] <= s["total_time"]
    assert s["opt_state_bytes"] == 2 * 4 + 4  # exp_avg, exp_avg_sq (float32) + step (float32 scalar)
    assert s["time_per_step"] > 0


def test_oscillations():
    assert oscillations([5, 4, 3, 2, 1]) == 0
    assert oscillations([5, 4, 4, 3]) == 0
    assert oscillations([1, 0, 1, 0, 1]) == 3
