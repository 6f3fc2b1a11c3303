"""optbench plugin: four optimizers from the pytorch-optimizer package, one per kind of contract.

* ``lamb`` and ``adabelief`` are ordinary: one gradient per step.
* ``sam`` re-evaluates the loss at a perturbed point inside ``step()``, so it
  declares the ``closure`` capability; the harness then passes a closure.
* ``adahessian`` differentiates the gradient (Hutchinson's estimate of the
  Hessian diagonal), so it declares ``create_graph``; the harness then calls
  ``backward(create_graph=True)``.
"""

import torch

import optbench
import pytorch_optimizer as po

LR_GRID = [1e-3, 1e-2, 1e-1]


def lamb(params, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-6):
    return po.Lamb(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, eps=eps)


def adabelief(params, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-16):
    return po.AdaBelief(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, eps=eps)


def sam(params, lr=0.01, momentum=0.9, rho=0.05, adaptive=False):
    # SAM wraps a base optimizer; lr and momentum are the base SGD's.
    return po.SAM(params, base_optimizer=torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr, momentum=momentum)


def adahessian(params, lr=0.1, beta1=0.9, beta2=0.999, weight_decay=0.0, hessian_power=1.0):
    return po.AdaHessian(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay,
                         hessian_power=hessian_power)


@optbench.hookimpl
def optbench_optimizers():
    return [
        optbench.OptimizerSpec(
            "lamb", lamb, {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "eps": 1e-6},
            grid={"lr": LR_GRID}, description="LAMB: Adam with a layer-wise trust ratio (pytorch-optimizer)"),
        optbench.OptimizerSpec(
            "adabelief", adabelief, {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "eps": 1e-16},
            grid={"lr": LR_GRID}, description="AdaBelief: Adam scaled by the gradient's surprise (pytorch-optimizer)"),
        optbench.OptimizerSpec(
            "sam", sam, {"lr": 0.01, "momentum": 0.9, "rho": 0.05, "adaptive": False},
            grid={"lr": LR_GRID, "rho": [0.01, 0.05]}, capabilities={"closure"},
            description="SAM over SGD with momentum: two gradients per step (pytorch-optimizer)"),
        optbench.OptimizerSpec(
            "adahessian", adahessian,
            {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "hessian_power": 1.0},
            grid={"lr": LR_GRID + [1.0]}, capabilities={"create_graph"},
            description="AdaHessian: Adam with a Hessian-diagonal denominator (pytorch-optimizer)"),
    ]
