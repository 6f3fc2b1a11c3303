"""optbench plugin: schedule-free AdamW and SGD (Defazio et al., 2024), from the schedulefree package.

A schedule-free optimizer takes gradients at one point (y) but the weights to
evaluate are an average (x); ``.train()`` and ``.eval()`` move the model's
parameters between the two.  Declaring the ``train_eval`` capability makes
the harness call ``.train()`` before training and ``.eval()`` around every
evaluation.  The method replaces the learning-rate schedule, so benchmark it
with the ``constant`` schedule (its own ``warmup_steps`` does the warm-up).
"""

import optbench
import schedulefree


def adamw_schedulefree(params, lr=0.0025, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=0,
                       foreach=True):
    return schedulefree.AdamWScheduleFree(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                                          warmup_steps=warmup_steps, foreach=foreach)


def sgd_schedulefree(params, lr=1.0, momentum=0.9, weight_decay=0.0, warmup_steps=0, foreach=True):
    return schedulefree.SGDScheduleFree(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                        warmup_steps=warmup_steps, foreach=foreach)


@optbench.hookimpl
def optbench_optimizers():
    return [
        optbench.OptimizerSpec(
            "adamw-schedulefree", adamw_schedulefree,
            {"lr": 0.0025, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "warmup_steps": 0,
             "foreach": True},
            grid={"lr": [1e-3, 1e-2, 1e-1]},
            description="schedule-free AdamW (schedulefree)",
            capabilities={"train_eval", "foreach"},
        ),
        optbench.OptimizerSpec(
            "sgd-schedulefree", sgd_schedulefree,
            {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.0, "warmup_steps": 0, "foreach": True},
            grid={"lr": [0.01, 0.1, 1.0]},
            description="schedule-free SGD with momentum (schedulefree)",
            capabilities={"train_eval", "foreach"},
        ),
    ]
