"""The harness honours what an optimizer spec declares, with real optimizers from PyPI
(through the example plugins) and a few purpose-built ones."""

from __future__ import annotations

import dataclasses
import math
import sys
import textwrap
from pathlib import Path

import pytest

from optbench import cli, registry
from optbench.gridspec import GridBlock, GridSpec, expand
from optbench.runner import run_one

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PLUGIN = '''
import math

import torch

import optbench

LOG = []  # calls in order, read by the tests


class ModalSGD(torch.optim.SGD):
    """SGD with the train()/eval() switch of schedule-free optimizers, logging each call."""

    def train(self):
        LOG.append("train")

    def eval(self):
        LOG.append("eval")

    def step(self, closure=None):
        LOG.append("step")
        return super().step(closure)


def build_probe(seed=0, device="cpu"):
    w = torch.zeros(1, requires_grad=True)

    def evaluate():
        LOG.append("evaluate")
        return {"val_loss": float((w - 1) ** 2)}

    return optbench.Problem(params=[w], loss=lambda micro: ((w - 1) ** 2).sum(), evaluate=evaluate)


@optbench.hookimpl
def optbench_optimizers():
    return [
        optbench.OptimizerSpec("lbfgs", torch.optim.LBFGS, {"lr": 1.0, "max_iter": 20}, capabilities={"closure"}),
        optbench.OptimizerSpec("lbfgs-undeclared", torch.optim.LBFGS, {"lr": 1.0}),
        optbench.OptimizerSpec("modal-sgd", ModalSGD, {"lr": 0.1}, capabilities={"train_eval"}),
        optbench.OptimizerSpec("picky", torch.optim.SGD, {"lr": 0.1},
                               unsupported={"pi": "needs at least two weights"}),
    ]


@optbench.hookimpl
def optbench_tasks():
    return [optbench.TaskSpec("probe", build_probe, steps=4, eval_every=2, target_metric="val_loss")]
'''


@pytest.fixture(scope="module")
def caps(tmp_path_factory):
    """Registry with the example plugins for real optimizers and this file's purpose-built ones."""
    folder = tmp_path_factory.mktemp("caps")
    (folder / "capsplug.py").write_text(textwrap.dedent(PLUGIN))
    with pytest.MonkeyPatch.context() as mp:
        for pkg in ("schedulefree", "pytorch-optimizer"):
            mp.syspath_prepend(str(EXAMPLES / pkg))
        reg = registry.load(["optbench_schedulefree", "optbench_pytorch_optimizer"], [str(folder)])
        assert reg.problems == []
        yield reg


def run(reg, optimizer, task="pi", **block):
    configs = expand(GridSpec([GridBlock(tasks=[task], optimizers=[optimizer], **block)]), reg)
    return [run_one(rc, reg)["summary"] for rc in configs]


def without(reg, name, capability):
    """``reg`` with ``name``'s spec minus one capability: what an author who forgot it gets."""
    spec = reg.optimizers[name]
    forgot = dataclasses.replace(spec, capabilities=spec.capabilities - {capability})
    return dataclasses.replace(reg, optimizers={**reg.optimizers, name: forgot})


def test_closure_lbfgs_converges_on_pi(caps):
    (s,) = run(caps, "lbfgs", steps=5)
    assert s["status"] == "ok", s["reason"]
    assert s["best_loss"] < 1e-10  # a quadratic: one line search lands on pi


def test_closure_not_declared_fails_the_run_not_the_grid(caps):
    (s,) = run(caps, "lbfgs-undeclared", steps=5)
    assert s["status"] == "failed" and "closure" in s["reason"]


def test_closure_with_piling_gradients_is_skipped(caps):
    (s,) = run(caps, "lbfgs", grad_modes=["never"], steps=5)
    assert s["status"] == "skipped" and "never" in s["reason"]


def test_train_eval_switches_around_every_evaluation(caps):
    log = sys.modules["optbench_local_capsplug"].LOG
    log.clear()
    (s,) = run(caps, "modal-sgd", task="probe")
    assert s["status"] == "ok", s["reason"]
    assert log[0] == "train" and log.count("step") == 4 and log.count("evaluate") == 2  # eval_every=2
    mode = None
    for call in log:
        if call in ("train", "eval"):
            mode = call
        else:  # steps see the training point, evaluations the averaged weights
            assert mode == ("train" if call == "step" else "eval"), log


def test_schedule_free_needs_its_mode_switch(caps):
    (s,) = run(caps, "adamw-schedulefree", hparams={"adamw-schedulefree": {"lr": [0.1]}})
    assert s["status"] == "ok" and s["final_loss"] < 0.1 * math.pi ** 2
    (s,) = run(without(caps, "adamw-schedulefree", "train_eval"), "adamw-schedulefree", steps=3)
    assert s["status"] == "failed" and "train mode" in s["reason"]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # torch's advice; grads are reset
def test_create_graph_lets_adahessian_differentiate_the_gradient(caps):
    (s,) = run(caps, "adahessian", hparams={"adahessian": {"lr": [1.0]}})
    assert s["status"] == "ok" and s["final_loss"] < 1e-4, s
    (s,) = run(without(caps, "adahessian", "create_graph"), "adahessian", steps=3)
    assert s["status"] == "failed" and "does not require grad" in s["reason"]


def test_sam_gets_a_closure(caps):
    (s,) = run(caps, "sam", task="l2-bowl", steps=50)
    assert s["status"] == "ok" and s["final_loss"] < 1.0, s


@pytest.mark.parametrize("optimizer, flag", [("adam", "fused"), ("adamw-schedulefree", "foreach")])
def test_fused_and_foreach_flags_are_grid_axes_and_agree(caps, optimizer, flag):
    runs = run(caps, optimizer, task="l2-bowl", steps=30, hparams={optimizer: {flag: [True, False], "lr": [0.1]}})
    assert [s["status"] for s in runs] == ["ok", "ok"]
    assert {s["hparams"] for s in runs} == {f'{{"{flag}":true,"lr":0.1}}', f'{{"{flag}":false,"lr":0.1}}'}
    assert runs[0]["final_loss"] == pytest.approx(runs[1]["final_loss"], rel=1e-4)


def test_unsupported_task_is_skipped_with_the_reason_and_the_grid_goes_on(tmp_path, capsys):
    import pandas as pd

    plugin_dir = Path(sys.modules["optbench_local_capsplug"].__file__).parent
    code = cli.main(["grid", "--plugin-dir", str(plugin_dir), "--tasks", "pi,l2-bowl", "--optimizers", "picky",
                     "--steps", "5", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert "2 runs (2 ran, 0 reused): 1 ok, 1 skipped" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("task")
    assert summary.loc["pi", "status"] == "skipped"
    assert summary.loc["pi", "reason"] == "picky cannot run pi: needs at least two weights"
    assert summary.loc["l2-bowl", "status"] == "ok"
