"""The two model-5 tasks: build a :class:`optbench.Problem` from task parameters.

Sizes (``size`` parameter; any field can be overridden on its own, e.g.
``--set fineweb-model5.n_layer=2``):

``course``  batch 64, sequence 256: the course's numbers.  The notes give no
            width or depth, so this uses nanoGPT's "baby GPT"
            (``config/train_shakespeare_char.py``: 6 layers, 6 heads, 384 wide),
            the small reference config that trains with exactly this batch and
            context.  About 30M parameters, 19M of them the tied head; meant
            for a GPU: one step is ~3 TFLOP and its logits alone take 3.3 GB
            (on 2 CPU cores: ~35 s a step and a 17 GB peak RSS).
``cpu``     the default: 3 layers, 3 heads of 64, 192 wide, batch 8, sequence 64
            (512 tokens a step).  Chosen so that a few optimizers x 200 steps
            run in minutes on two cores while the step stays matmul-bound: the
            50,257 x 192 head is ~88 % of the FLOPs and its GEMMs run near
            the machine's peak.  Measured on 2 cores of an AMD EPYC (Zen 4),
            torch 2.13, AdamW: 0.28 s a step, ~1,850 tokens/s, ~62 % of the
            measured 195 GFLOP/s fp32 matmul peak with
            ``optbench.malloc.tune_malloc`` (0.42 s a step without it); the
            head and its cross-entropy are ~84 % of the step time.
``tiny``    1 layer, 2 heads, 32 wide, batch 4, sequence 32: for tests.

The held-out split is the last 10 % of the tokens; ``val_loss`` is the
training objective (full-sequence or final-token) on a fixed set of
``eval_batches`` batches of consecutive windows from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optbench import Problem
from optbench.errors import OptbenchError, did_you_mean

from .data import SAMPLERS, eval_batches, load_tokens, make_sampler, split_tokens
from .gpt import GPT, GPTConfig

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=1, n_head=2, n_embd=32, batch_size=4, seq_len=32, eval_batches=2),
    "cpu": dict(n_layer=3, n_head=3, n_embd=192, batch_size=8, seq_len=64, eval_batches=8),
    "course": dict(n_layer=6, n_head=6, n_embd=384, batch_size=64, seq_len=256, eval_batches=4),
}

#: the task parameters; ``None`` means "from ``size``"
DEFAULTS: dict[str, Any] = {
    "size": "cpu",
    "n_layer": None,
    "n_head": None,
    "n_embd": None,
    "batch_size": None,
    "seq_len": None,
    "eval_batches": None,
    "dropout": 0.0,
    "bias": True,
    "logit_scale": False,
    "final_token_loss": False,
    "sampler": "random",
    "data": "",
    "n_docs": 1000,
    "val_fraction": 0.1,
}


def resolve(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Task parameters with the size preset filled in; one-line errors for bad values."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        name = min(unknown)
        raise OptbenchError(
            f"{task}: unknown parameter {name!r}{did_you_mean(name, DEFAULTS)}; known: {', '.join(DEFAULTS)}"
        )
    p = {**DEFAULTS, **params}
    size = p["size"]
    if size not in SIZES:
        raise OptbenchError(f"{task}: unknown size {size!r}{did_you_mean(size, SIZES)}; known: {', '.join(SIZES)}")
    for key, value in SIZES[size].items():
        if p[key] is None:
            p[key] = value
        elif int(p[key]) < 1:
            raise OptbenchError(f"{task}: {key} must be a positive integer, got {p[key]!r}")
        else:
            p[key] = int(p[key])
    if p["n_embd"] % p["n_head"]:
        raise OptbenchError(f"{task}: n_embd ({p['n_embd']}) must be divisible by n_head ({p['n_head']})")
    if not 0.0 <= float(p["dropout"]) < 1.0:
        raise OptbenchError(f"{task}: dropout must be in [0, 1), got {p['dropout']!r}")
    if p["sampler"] not in SAMPLERS:
        raise OptbenchError(
            f"{task}: unknown sampler {p['sampler']!r}{did_you_mean(p['sampler'], SAMPLERS)}; "
            f"known: {', '.join(SAMPLERS)}"
        )
    if not 0.0 < float(p["val_fraction"]) < 1.0:
        raise OptbenchError(f"{task}: val_fraction must be in (0, 1), got {p['val_fraction']!r}")
    return p


def _splits(task: str, p: dict[str, Any]):
    tokens = load_tokens(str(p["data"] or ""), int(p["n_docs"]), task=task)
    train, val = split_tokens(tokens, float(p["val_fraction"]))
    need = p["seq_len"] + 1
    if len(train) < need or len(val) < need:
        raise OptbenchError(
            f"{task}: {len(tokens)} tokens are too few for seq_len {p['seq_len']} "
            f"({len(train)} train / {len(val)} held-out); use more documents (n_docs) or a shorter seq_len"
        )
    return train, val


def make_prepare(task: str) -> Callable[..., None]:
    def prepare(**params: Any) -> None:
        """Validate the parameters and fill the token cache once, before any worker starts."""
        _splits(task, resolve(task, params))

    return prepare


def make_build(task: str) -> Callable[..., Problem]:
    def build(seed: int = 0, device: Any = "cpu", **params: Any) -> Problem:
        p = resolve(task, params)
        train, val = _splits(task, p)
        B, T = p["batch_size"], p["seq_len"]
        final_only = bool(p["final_token_loss"])

        config = GPTConfig(
            block_size=T,
            n_layer=p["n_layer"],
            n_head=p["n_head"],
            n_embd=p["n_embd"],
            dropout=float(p["dropout"]),
            bias=bool(p["bias"]),
            logit_scale=bool(p["logit_scale"]),
        )
        # The global generator drives the initialisation here and the dropout
        # masks during training (nn.Dropout and SDPA take no generator), so
        # seeding it makes a seed fix both; batches have their own generator.
        torch.manual_seed(seed)
        model = GPT(config).to(device)
        sampler = make_sampler(p["sampler"], train, B, T, seed)
        held_out = eval_batches(val, B, T, p["eval_batches"])

        def loss(micro: int) -> torch.Tensor:
            x, y = sampler.next_batch()
            return model.loss(x.to(device), y.to(device), final_token_only=final_only)

        @torch.no_grad()
        def evaluate() -> dict[str, float]:
            total = count = 0.0
            for x, y in held_out:
                n = len(x)
                total += model.loss(x.to(device), y.to(device), final_token_only=final_only).item() * n
                count += n
            return {"val_loss": total / count}

        return Problem(
            params=list(model.parameters()),
            loss=loss,
            evaluate=evaluate,
            modules=[model],
            tokens_per_micro=B * T,
            flops_per_micro=model.flops_per_token(T, final_token_only=final_only) * B * T,
        )

    return build
