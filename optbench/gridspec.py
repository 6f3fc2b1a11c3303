"""What to run: the grid's axes, its expansion into runs, and up-front validation.

A grid is the cartesian product tasks x optimizers x hyper-parameter lists x
schedulers x gradient modes x clipping x seeds.  A spec may hold several such
blocks (a preset's ``[[grid]]`` tables); their runs are unioned and repeats
are dropped.  Everything is checked before the first run starts, so a typo
costs a second, not a half-finished grid.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from optbench.errors import OptbenchError, did_you_mean

AXIS_FIELDS = ("tasks", "optimizers", "schedulers", "grad_modes", "clip", "seeds")
_GRAD_MODE = re.compile(r"^(zero|never|accum(\d+))$")


@dataclass
class GridBlock:
    tasks: list[str] = field(default_factory=list)
    optimizers: list[str] = field(default_factory=list)
    schedulers: list[str] = field(default_factory=lambda: ["constant"])
    grad_modes: list[str] = field(default_factory=lambda: ["zero"])
    clip: list[float] = field(default_factory=lambda: [0.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int | None = None  # None: each task's own default
    #: {optimizer or "*": {hparam: [values]}}
    hparams: dict[str, dict[str, list]] = field(default_factory=dict)
    #: {task: {param: value}}
    task_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: {scheduler: {param: value}}
    scheduler_params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class GridSpec:
    blocks: list[GridBlock]
    device: str = "cpu"
    threads: int | None = None
    timeout: float | None = None  # seconds per run; None = no limit
    name: str = "custom"


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one run's result, by name: picklable and hashable."""

    task: str
    optimizer: str
    hparams: tuple  # sorted (key, value) pairs of the *resolved* hyper-parameters
    overrides: tuple  # the subset the grid set, for display
    scheduler: str
    scheduler_params: tuple
    grad_mode: str
    clip: float
    seed: int
    steps: int
    task_params: tuple
    device: str = "cpu"
    timeout: float | None = None

    @property
    def hparams_dict(self) -> dict:
        return dict(self.hparams)

    @property
    def task_params_dict(self) -> dict:
        return dict(self.task_params)

    @property
    def scheduler_params_dict(self) -> dict:
        return dict(self.scheduler_params)

    @property
    def hparams_label(self) -> str:
        return canonical_json(dict(self.overrides))

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("hparams", "overrides", "scheduler_params", "task_params"):
            d[k] = dict(d[k])
        return d


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def accum_steps(grad_mode: str) -> int:
    """Micro-batches per optimizer step: N for ``accumN``, else 1."""
    m = _GRAD_MODE.match(grad_mode)
    return int(m.group(2)) if m and m.group(2) else 1


def _as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _check_names(kind: str, names, table) -> None:
    for n in names:
        if n not in table:
            known = sorted(table)
            raise OptbenchError(
                f"unknown {kind} {n!r}{did_you_mean(n, known)}; known: {', '.join(known)}"
                f" (see `optbench list`)"
            )


def _check_keys(what: str, keys, known, fix: str) -> None:
    for k in keys:
        if k not in known:
            raise OptbenchError(
                f"{what} has no parameter {k!r}{did_you_mean(k, known)}; "
                f"its parameters are: {', '.join(sorted(known)) or '(none)'}{fix}"
            )


def _hparam_grid(block: GridBlock, opt: str, spec) -> list[dict]:
    """The list of override dicts for one optimizer in one block."""
    grid: dict[str, list] = {}
    for k, v in block.hparams.get("*", {}).items():
        if k in spec.defaults:  # a wildcard key applies only where it means something
            grid[k] = _as_list(v)
    for k, v in block.hparams.get(opt, {}).items():
        grid[k] = _as_list(v)
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def validate_block(block: GridBlock, reg) -> None:
    """Raise OptbenchError with one line for the first thing wrong in ``block``."""
    if not block.tasks:
        raise OptbenchError("the grid has no tasks; pass --tasks (see `optbench list`) or a --preset")
    if not block.optimizers:
        raise OptbenchError("the grid has no optimizers; pass --optimizers (see `optbench list`) or a --preset")
    _check_names("task", block.tasks, reg.tasks)
    _check_names("optimizer", block.optimizers, reg.optimizers)
    _check_names("scheduler", block.schedulers, reg.schedulers)
    for gm in block.grad_modes:
        m = _GRAD_MODE.match(str(gm))
        if not m or (m.group(2) and int(m.group(2)) < 1):
            raise OptbenchError(
                f"unknown gradient mode {gm!r}{did_you_mean(gm, ['zero', 'never', 'accum4'])}; "
                f"use zero, never or accumN (N micro-batches per step, e.g. accum4)"
            )
    for c in block.clip:
        if not isinstance(c, (int, float)) or c < 0 or c != c:
            raise OptbenchError(f"bad clip value {c!r}: use 0 (no clipping) or a positive max gradient norm")
    for s in block.seeds:
        if not isinstance(s, int) or isinstance(s, bool):
            raise OptbenchError(f"bad seed {s!r}: seeds are integers, e.g. --seeds 0,1,2")
    if block.steps is not None and (not isinstance(block.steps, int) or block.steps < 1):
        raise OptbenchError(f"bad steps {block.steps!r}: use a positive integer")
    wildcard = set(block.hparams.get("*", {}))
    for key in wildcard:
        if not any(key in reg.optimizers[o].defaults for o in block.optimizers):
            raise OptbenchError(
                f"hyper-parameter {key!r} is not known to any selected optimizer "
                f"({', '.join(block.optimizers)}); check the spelling or prefix it with an optimizer name"
            )
    for opt, params in block.hparams.items():
        if opt == "*":
            continue
        _check_names("optimizer", [opt], reg.optimizers)
        _check_keys(f"optimizer {opt!r}", params, reg.optimizers[opt].defaults,
                    f" (set them as --set {opt}.KEY=V1,V2)")
    for task, params in block.task_params.items():
        _check_names("task", [task], reg.tasks)
        _check_keys(f"task {task!r}", params, reg.tasks[task].defaults, "")
    for sched, params in block.scheduler_params.items():
        _check_names("scheduler", [sched], reg.schedulers)
        _check_keys(f"scheduler {sched!r}", params, reg.schedulers[sched].defaults, "")


def expand(spec: GridSpec, reg) -> list[RunConfig]:
    """All runs of ``spec`` in a stable order, repeats removed, after validation."""
    runs: dict[RunConfig, None] = {}
    for block in spec.blocks:
        validate_block(block, reg)
        for task in block.tasks:
            tspec = reg.tasks[task]
            tparams = {**tspec.defaults, **block.task_params.get(task, {})}
            steps = block.steps or tspec.steps
            for opt in block.optimizers:
                ospec = reg.optimizers[opt]
                for overrides in _hparam_grid(block, opt, ospec):
                    hp = {**ospec.defaults, **overrides}
                    for sched, gm, clip, seed in itertools.product(
                        block.schedulers, block.grad_modes, block.clip, block.seeds
                    ):
                        sparams = {**reg.schedulers[sched].defaults, **block.scheduler_params.get(sched, {})}
                        runs[RunConfig(
                            task=task, optimizer=opt, hparams=tuple(sorted(hp.items())),
                            overrides=tuple(sorted(overrides.items())), scheduler=sched,
                            scheduler_params=tuple(sorted(sparams.items())), grad_mode=gm,
                            clip=float(clip), seed=seed, steps=steps, task_params=tuple(sorted(tparams.items())),
                            device=spec.device, timeout=spec.timeout,
                        )] = None
    configs = list(runs)
    check_factories(configs, reg)
    return configs


def check_factories(configs: list[RunConfig], reg) -> None:
    """Build every distinct optimizer and scheduler once on a dummy parameter.

    This lets torch's own argument checks (negative lr, betas out of range,
    wrong types) fail before the first run instead of inside it.
    """
    import torch

    seen = set()
    for rc in configs:
        key = (rc.optimizer, rc.hparams, rc.scheduler, rc.scheduler_params)
        if key in seen:
            continue
        seen.add(key)
        p = torch.zeros(2, requires_grad=True)
        label = ", ".join(f"{k}={v}" for k, v in rc.overrides) or "defaults"
        try:
            opt = reg.optimizers[rc.optimizer].factory([p], **rc.hparams_dict)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise OptbenchError(
                f"bad hyper-parameter for optimizer {rc.optimizer!r} ({label}): {exc}; "
                f"fix the value in --set or the config"
            ) from None
        try:
            reg.schedulers[rc.scheduler].factory(opt, rc.steps, **rc.scheduler_params_dict)
        except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as exc:
            raise OptbenchError(
                f"bad parameter for scheduler {rc.scheduler!r} "
                f"({rc.scheduler_params_dict}): {exc}; fix it in the config"
            ) from None


def with_overrides(block: GridBlock, **axes) -> GridBlock:
    return replace(block, **{k: v for k, v in axes.items() if v is not None})
