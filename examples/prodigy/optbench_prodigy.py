"""optbench plugin: Prodigy (Mishchenko & Defazio, 2023), from the prodigyopt package.

Prodigy estimates the step size itself; its ``lr`` is a multiplier on that
estimate and should stay at 1.0.  So the suggested grid scans ``d_coef`` (the
documented knob for "too fast"/"too slow") and leaves ``lr`` alone.  In a grid
that sweeps ``--set lr=...`` for every optimizer, pin it with
``--set prodigy.lr=1``.
"""

import optbench
from prodigyopt import Prodigy


def prodigy(params, lr=1.0, beta1=0.9, beta2=0.999, weight_decay=0.0, d_coef=1.0, safeguard_warmup=False,
            use_bias_correction=False):
    return Prodigy(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, d_coef=d_coef,
                   safeguard_warmup=safeguard_warmup, use_bias_correction=use_bias_correction)


@optbench.hookimpl
def optbench_optimizers():
    return [optbench.OptimizerSpec(
        "prodigy", prodigy,
        {"lr": 1.0, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "d_coef": 1.0, "safeguard_warmup": False,
         "use_bias_correction": False},
        grid={"d_coef": [0.5, 1.0, 2.0]},
        description="Prodigy: Adam with a learned step size, lr=1 (prodigyopt)",
    )]
