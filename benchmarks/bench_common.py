"""Shared pieces of the harness-overhead benchmarks: bare loops and the model-5 set-up.

A *bare* loop is what a user writes by hand for the same work as one grid run:
the same task, the optimizer built exactly as the optbench plugin builds it,
and a plain ``zero_grad / forward / backward / step / loss.item()`` loop.
Used by ``test_harness_overhead.py`` (pytest-benchmark) and ``harness_ratio.py``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import torch

LR = 0.01


def bare_optimizer(name: str, params, lr: float):
    """The optimizer exactly as plugins/optimizers.py builds it with its defaults."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=0.0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True)
    raise ValueError(name)


def bare_run(task: str, opt_name: str, lr: float, seed: int, steps: int) -> list[float]:
    """A hand-written loop doing a toy grid run's work, recording the loss curve."""
    torch.manual_seed(seed)
    if task == "pi":
        w = torch.zeros(1, requires_grad=True)
        t = math.pi

        def f():
            return ((w - t) ** 2).sum()
    else:
        w = torch.tensor([6.0, -8.0], requires_grad=True)

        def f():
            return (w * w).sum()
    opt = bare_optimizer(opt_name, [w], lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = f()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def toy_config(reg, task: str = "pi", optimizer: str = "adam", steps: int = 150, lr: float = LR):
    """The RunConfig of one toy grid run (plugin defaults, the given lr)."""
    from optbench.gridspec import GridBlock, GridSpec, expand

    spec = GridSpec([GridBlock(tasks=[task], optimizers=[optimizer], hparams={"*": {"lr": [lr]}}, steps=steps)])
    return expand(spec, reg)[0]


# ----------------------------------------------------------------------------- model 5

MODEL5_TASK = "fineweb-model5"
_WORDS = ("the model reads a stream of tokens and learns to predict the next one while the optimizer "
          "follows the gradient of the loss on each batch so that held out text becomes less surprising").split()


class Model5Unavailable(Exception):
    pass


def model5_setup(workdir: Path, size: str = "cpu") -> dict:
    """Task parameters of the model-5 ``size`` preset on a local synthetic corpus, tokens cached.

    The corpus (600 English-like documents, ~50k GPT-2 tokens) stands in for
    FineWeb: a step's cost depends on the model and the batch shape, not on
    which tokens are in the batch.  Needs the model-5 task and tiktoken's GPT-2
    files (../shared/data/tiktoken, or the network).
    """
    from optbench import registry

    reg = registry.load()
    if MODEL5_TASK not in reg.tasks:
        raise Model5Unavailable(f"the {MODEL5_TASK} task is not installed")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiktoken"
    if shared.is_dir():
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(shared))
    workdir.mkdir(parents=True, exist_ok=True)
    # a private token cache: the corpus is new each time, its tokens would only clutter the user's cache
    os.environ["OPTBENCH_CACHE"] = str(workdir / "cache")
    corpus = workdir / "corpus.jsonl"
    if not corpus.exists():
        rng = random.Random(0)
        with corpus.open("w") as f:
            for i in range(600):
                words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 90)))
                f.write(json.dumps({"text": f"Document {i}. {words.capitalize()}."}) + "\n")
    params = {"size": size, "data": str(corpus)}
    try:
        reg.tasks[MODEL5_TASK].prepare(**{**reg.tasks[MODEL5_TASK].defaults, **params})
    except Exception as exc:  # no tokenizer files offline, ...
        raise Model5Unavailable(f"{type(exc).__name__}: {exc}") from None
    return params


def model5_config(reg, params: dict, steps: int):
    from optbench.gridspec import GridBlock, GridSpec, expand

    spec = GridSpec([GridBlock(tasks=[MODEL5_TASK], optimizers=["adamw"], task_params={MODEL5_TASK: params},
                               hparams={"adamw": {"lr": [1e-3]}}, steps=steps)])
    return expand(spec, reg)[0]


def bare_model5_run(reg, params: dict, steps: int, step_times: list | None = None) -> float:
    """nanoGPT's training loop on the task's own model and batches; returns the last loss.

    ``step_times``: a list to append each step's wall time to (the same span
    the harness records as ``step_time``: batch, forward, backward, step).

    Same work as ``run_one`` of :func:`model5_config`: build (same seed), AdamW
    as the plugin builds it, ``steps`` steps, one held-out evaluation at the end
    (the harness evaluates after the last step when steps < eval_every).
    """
    tspec = reg.tasks[MODEL5_TASK]
    problem = tspec.build(seed=0, device="cpu", **{**tspec.defaults, **params})
    model = problem.modules[0]
    opt = torch.optim.AdamW(problem.params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True)
    model.train()
    lossf = math.nan
    perf = time.perf_counter
    for it in range(steps):
        t0 = perf()
        loss = problem.loss(it)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lossf = loss.item()
        if step_times is not None:
            step_times.append(perf() - t0)
    model.eval()
    problem.evaluate()
    return lossf
