"""Built-in optimizers: the specs build the torch optimizers they claim to."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("momentum", torch.optim.SGD),
                                       ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("adam-l2", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop)])
def test_factory_builds_the_torch_optimizer(reg, name, cls):
    spec = reg.optimizers[name]
    opt = spec.factory([torch.zeros(3, requires_grad=True)], **spec.defaults)
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == spec.defaults["lr"]


def test_adam_family_is_fused_on_cpu(reg):
    for name in ("adam", "adamw", "adam-l2"):
        spec = reg.optimizers[name]
        assert spec.factory([torch.zeros(2, requires_grad=True)], **spec.defaults).defaults["fused"] is True


def test_adam_l2_couples_decay_and_adamw_decouples(reg):
    # with zero gradient, AdamW still shrinks w by lr*wd*w; Adam+L2 turns the decay into a
    # gradient that Adam normalises, so its first step is a full lr-sized step
    def first_step(name):
        w = torch.ones(1, requires_grad=True)
        opt = reg.optimizers[name].factory([w], lr=0.1, weight_decay=0.01)
        w.grad = torch.zeros(1)
        opt.step()
        return 1.0 - w.item()

    assert first_step("adamw") == pytest.approx(0.1 * 0.01, rel=1e-4)
    assert first_step("adam-l2") == pytest.approx(0.1, rel=1e-3)


def test_nesterov_changes_the_path(reg):
    spec = reg.optimizers["momentum"]

    def path(nesterov):
        w = torch.zeros(1, requires_grad=True)
        opt = spec.factory([w], lr=0.1, momentum=0.9, nesterov=nesterov)
        out = []
        for _ in range(5):
            opt.zero_grad()
            ((w - 3) ** 2).sum().backward()
            opt.step()
            out.append(w.item())
        return out

    assert path(True) != path(False)
