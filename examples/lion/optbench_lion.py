"""optbench plugin: Lion (Chen et al., 2023), from the lion-pytorch package."""

import optbench
from lion_pytorch import Lion


def lion(params, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
    return Lion(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)


@optbench.hookimpl
def optbench_optimizers():
    return [optbench.OptimizerSpec(
        "lion", lion, {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
        grid={"lr": [1e-4, 1e-3, 1e-2, 1e-1]},  # a sign update moves every weight by lr: scan widely
        description="Lion: sign of interpolated momentum (lion-pytorch)",
    )]
