"""Built-in optimizers: thin wrappers over ``torch.optim``.

Hyper-parameters are flat scalars (``beta1``/``beta2`` rather than a ``betas``
tuple) so that every one of them can be a grid axis.  Adam-family optimizers
default to ``fused=True``: on CPU the fused kernel is about 3x faster than the
for-loop implementation here and bit-identical on the course's tasks.
"""

from __future__ import annotations

import torch

import optbench
from optbench import OptimizerSpec

LR_GRID = [1e-3, 1e-2, 1e-1]


def sgd(params, lr, weight_decay=0.0):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def momentum(params, lr, momentum=0.9, nesterov=False, dampening=0.0, weight_decay=0.0):
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=bool(nesterov), dampening=dampening, weight_decay=weight_decay
    )


def _adam(cls, params, lr, beta1, beta2, eps, weight_decay, fused, amsgrad=False, foreach=None):
    return cls(
        params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
        fused=bool(fused) or None, foreach=foreach,
    )


def adam(params, lr, beta1=0.9, beta2=0.999, eps=1e-8, fused=True, amsgrad=False, foreach=None):
    return _adam(torch.optim.Adam, params, lr, beta1, beta2, eps, 0.0, fused, amsgrad, foreach)


def adam_l2(params, lr, weight_decay=0.01, beta1=0.9, beta2=0.999, eps=1e-8, fused=True, foreach=None):
    # torch.optim.Adam adds weight_decay * w to the gradient before the adaptive
    # scaling: the coupled L2 penalty that AdamW was invented to replace.
    return _adam(torch.optim.Adam, params, lr, beta1, beta2, eps, weight_decay, fused, foreach=foreach)


def adamw(params, lr, weight_decay=0.01, beta1=0.9, beta2=0.999, eps=1e-8, fused=True, amsgrad=False, foreach=None):
    return _adam(torch.optim.AdamW, params, lr, beta1, beta2, eps, weight_decay, fused, amsgrad, foreach)


def rmsprop(params, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False, foreach=None):
    return torch.optim.RMSprop(
        params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay, centered=bool(centered),
        foreach=foreach,
    )


_ADAM_CAPS = {"fused", "foreach"}


@optbench.hookimpl
def optbench_optimizers():
    return [
        OptimizerSpec("sgd", sgd, {"lr": 0.01, "weight_decay": 0.0}, {"lr": LR_GRID},
                      "plain stochastic gradient descent"),
        OptimizerSpec("momentum", momentum,
                      {"lr": 0.01, "momentum": 0.9, "nesterov": False, "dampening": 0.0, "weight_decay": 0.0},
                      {"lr": LR_GRID, "nesterov": [False, True]}, "SGD with heavy-ball or Nesterov momentum"),
        OptimizerSpec("adam", adam,
                      {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "fused": True, "amsgrad": False},
                      {"lr": LR_GRID}, "Adam (Kingma & Ba, 2015)", capabilities=_ADAM_CAPS),
        OptimizerSpec("adamw", adamw,
                      {"lr": 1e-3, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                       "fused": True, "amsgrad": False},
                      {"lr": LR_GRID, "weight_decay": [0.0, 0.01, 0.1]},
                      "Adam with decoupled weight decay (Loshchilov & Hutter, 2019)", capabilities=_ADAM_CAPS),
        OptimizerSpec("adam-l2", adam_l2,
                      {"lr": 1e-3, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "fused": True},
                      {"lr": LR_GRID, "weight_decay": [0.0, 0.01, 0.1]},
                      "Adam with coupled L2 penalty in the gradient (what AdamW fixes)", capabilities=_ADAM_CAPS),
        OptimizerSpec("rmsprop", rmsprop,
                      {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0,
                       "centered": False},
                      {"lr": LR_GRID}, "RMSprop (Hinton, 2012)", capabilities={"foreach"}),
    ]
