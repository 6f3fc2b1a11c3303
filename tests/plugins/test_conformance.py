"""The conformance kit catches each kind of broken optimizer, with an explanation, and
passes good ones.  Each broken optimizer below is a hand-written SGD with one bug."""

from __future__ import annotations

import time

import pytest
import torch

from optbench import OptimizerSpec, cli
from optbench.conformance import CHECKS, run_checks


class HandSGD(torch.optim.Optimizer):
    """Plain SGD, written the way plugin authors write optimizers."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(self.update(p, group), alpha=-group["lr"])

    def update(self, p, group):
        return p.grad


class IgnoresGroupLr(HandSGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.defaults["lr"])


class CrashesOnNoneGrad(HandSGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad.sign(), alpha=-group["lr"])


class DecaysFrozenParams(HandSGD):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if any(p.grad is not None for p in group["params"]):
                torch._foreach_mul_(group["params"], 0.99)  # decay for the whole group, grads or not
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


class NormalisesWithoutEps(HandSGD):
    def update(self, p, group):
        return p.grad / p.grad.norm()


class MomentumInAttribute(HandSGD):
    def __init__(self, params, lr=0.1):
        super().__init__(params, lr)
        self.buffers = {}  # not in self.state: lost by state_dict()

    def update(self, p, group):
        buf = self.buffers.setdefault(p, torch.zeros_like(p))
        buf.mul_(0.9).add_(p.grad)
        return buf


class UnseededNoise(HandSGD):
    def update(self, p, group):
        g = torch.Generator().manual_seed(time.perf_counter_ns())
        return p.grad + 0.01 * torch.randn(p.shape, generator=g)


class FirstParamOnly(HandSGD):
    @torch.no_grad()
    def step(self, closure=None):
        p = self.param_groups[0]["params"][0]
        p.add_(p.grad, alpha=-self.param_groups[0]["lr"])


class Ascends(HandSGD):
    def update(self, p, group):
        return -p.grad


def spec(cls, name=None, **kw) -> OptimizerSpec:
    return OptimizerSpec(name or cls.__name__.lower(), cls, {"lr": 0.1}, grid={"lr": [0.01, 0.1]}, **kw)


def results(target, only=None):
    return {r.name: r for r in run_checks(target, only=only)}


def test_a_correct_optimizer_passes_every_check():
    got = results(spec(HandSGD))
    assert list(got) == list(CHECKS)
    assert all(r.passed for r in got.values()), [str(r) for r in got.values() if not r.passed]
    assert "lr=0.1: final loss" in got["converge-pi"].explanation


def test_lbfgs_gets_a_closure_and_refuses_param_groups_loudly():
    lbfgs = OptimizerSpec("lbfgs", torch.optim.LBFGS, {"lr": 1.0}, capabilities={"closure"})
    got = results(lbfgs)
    assert got["param-groups"].skipped and "LBFGS doesn't support per-parameter options" in \
        got["param-groups"].explanation
    assert all(r.passed for n, r in got.items() if n != "param-groups"), [str(r) for r in got.values()]


def test_without_the_closure_capability_lbfgs_fails_with_the_fix():
    r = results(OptimizerSpec("lbfgs", torch.optim.LBFGS, {"lr": 1.0}), only=["build"])["build"]
    assert r.failed
    assert "declare capabilities={'closure'}" in r.explanation


@pytest.mark.parametrize("bad, says", [
    (dict(defaults={"lr": 0.1, "momentum": 0.9}), "defaults has 'momentum' but the factory has no such keyword"),
    (dict(defaults={}), "the factory requires 'lr' but defaults has no value for it"),
    (dict(name="sgd,fast"), "contains whitespace or one of ',.:='"),
    (dict(defaults={"lr": [0.1]}), "defaults['lr'] = [0.1] is a list"),
    (dict(grid={"momentum": [0.9]}), "grid key 'momentum' is not in defaults"),
    (dict(grid={"lr": [0.1, -1]}), "grid['lr'] holds -1"),
    (dict(version=2), "version is 2; use a string"),
    (dict(unsupported={"pi": ""}), "unsupported['pi'] has no reason"),
])
def test_spec_problems(bad, says):
    fields = {"name": "lin", "factory": lambda params, lr: torch.optim.SGD(params, lr=lr), "defaults": {"lr": 0.1},
              **bad}
    got = results(OptimizerSpec(**fields))
    assert got["spec"].failed and says in got["spec"].explanation
    # nothing else runs on a broken spec: one failure, not ten
    assert all(r.skipped for n, r in got.items() if n != "spec")


@pytest.mark.parametrize("cls, check, says", [
    (FirstParamOnly, "build", "parameter 1 (shape (5,)) did not move in 3 steps"),
    (IgnoresGroupLr, "param-groups", "step() ignores the group's lr; read group['lr']"),
    (CrashesOnNoneGrad, "none-grads", "AttributeError: 'NoneType' object has no attribute 'sign'"),
    (DecaysFrozenParams, "none-grads", "parameter 1 had grad None on every step but moved"),
    (NormalisesWithoutEps, "zero-grads", "some parameters are NaN or inf"),
    (MomentumInAttribute, "state-dict", "keep all state in self.state"),
    (UnseededNoise, "determinism", "two runs seeded alike differ"),
    (Ascends, "converge-pi", "expected the final loss to fall below 0.1 x the first loss within 150 steps"),
])
def test_each_bug_is_caught_by_its_check(cls, check, says):
    r = results(spec(cls), only=[check])[check]
    assert r.failed, str(r)
    assert says in r.explanation, r.explanation


def test_declared_capabilities_must_be_real():
    got = results(spec(HandSGD, capabilities={"foreach"}), only=["capabilities"])["capabilities"]
    assert got.failed and "declares 'foreach' but the factory has no 'foreach' keyword" in got.explanation
    got = results(spec(HandSGD, capabilities={"train_eval"}), only=["capabilities"])
    assert got["build"].failed and "declares 'train_eval' but the optimizer has no .train()" in \
        got["build"].explanation
    assert got["capabilities"].skipped


def test_undeclared_train_eval_is_caught():
    class Modal(HandSGD):
        def train(self):
            pass

        def eval(self):
            pass

    got = results(spec(Modal), only=["capabilities"])["capabilities"]
    assert got.failed and "does not declare 'train_eval'" in got.explanation


def test_foreach_flag_that_changes_the_result_is_caught():
    def sloppy(params, lr=0.1, foreach=False):
        return torch.optim.SGD(params, lr=lr * (1.5 if foreach else 1.0))

    got = results(OptimizerSpec("sloppy", sloppy, {"lr": 0.1, "foreach": False}, capabilities={"foreach"}),
                  only=["capabilities"])["capabilities"]
    assert got.failed and "foreach=True and foreach=False disagree" in got.explanation


def test_unsupported_task_is_skipped_with_the_reason():
    got = results(spec(HandSGD, unsupported={"pi": "needs more than one weight"}), only=["converge-pi"])
    assert got["converge-pi"].skipped
    assert "needs more than one weight" in got["converge-pi"].explanation


PLUGIN = '''
import torch, optbench


class StateInAttribute(torch.optim.SGD):
    """SGD with momentum whose buffers live outside self.state."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr=lr)
        self.buffers = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    buf = self.buffers.setdefault(p, torch.zeros_like(p)).mul_(0.9).add_(p.grad)
                    p.add_(buf, alpha=-group["lr"])


@optbench.hookimpl
def optbench_optimizers():
    return [optbench.OptimizerSpec("forgetful", StateInAttribute, {"lr": 0.1}, grid={"lr": [0.01, 0.1]})]
'''


def test_check_command(tmp_path, capsys):
    (tmp_path / "forgetful.py").write_text(PLUGIN)
    assert cli.main(["check", "sgd", "forgetful", "--plugin-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "sgd (from optbench " in out and "forgetful (from local " in out
    assert "FAIL  state-dict: 3 steps after loading the state_dict into a fresh optimizer differ" in out
    assert "ok    converge-pi: lr=0.1: final loss" in out
    assert out.rstrip().endswith("1 of 2 optimizers failed the conformance kit (forgetful: state-dict)")

    assert cli.main(["check", "sgd", "--only", "spec,state-dict"]) == 0
    out = capsys.readouterr().out
    assert "state-dict" in out and "converge-pi" not in out


def test_check_command_usage_errors(capsys):
    assert cli.main(["check", "adma"]) == 2
    assert "unknown optimizer 'adma' (did you mean 'adam'?)" in capsys.readouterr().err
    assert cli.main(["check"]) == 2
    assert "or pass --all" in capsys.readouterr().err
    assert cli.main(["check", "sgd", "--only", "speed"]) == 2
    assert "unknown check 'speed'; the checks are: spec, build" in capsys.readouterr().err
