"""Grid specs from TOML files, presets and command-line flags.

A config file (and every preset in ``optbench/presets/``) looks like::

    tasks = ["pi", "l2-bowl"]          # shared by every [[grid]] block below
    optimizers = ["sgd", "adam"]
    seeds = [0, 1, 2]

    [hparams."*"]                      # "*": every optimizer that has the key
    lr = [1e-3, 1e-2, 1e-1]

    [[grid]]                           # optional: several blocks, runs unioned
    tasks = ["l2-bowl"]
    clip = [0, 1.0]

Keys inside a block override the shared ones; ``hparams``, ``task`` and
``scheduler`` tables merge.  Command-line axis flags override every block.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError, did_you_mean
from optbench.gridspec import GridBlock, GridSpec

PRESETS = ("smoke", "quick", "course")
DEFAULT_PRESET = "quick"
_BLOCK_KEYS = {"tasks", "optimizers", "schedulers", "grad_modes", "clip", "seeds", "steps", "hparams", "task",
               "scheduler"}
_TOP_KEYS = _BLOCK_KEYS | {"grid", "device", "threads", "timeout", "name", "description"}


def parse_value(text: str):
    """'1e-3' -> 0.001, '3' -> 3, 'true' -> True, 'none' -> None, else the string."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def parse_list(text: str, cast=parse_value) -> list:
    items = [s for s in text.split(",") if s.strip()]
    if not items:
        raise OptbenchError(f"empty list {text!r}: give comma-separated values, e.g. 0,1,2")
    return [cast(s) for s in items]


def _load_toml(text: str, where: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OptbenchError(f"{where}: invalid TOML: {exc}; fix the file and run again") from None


def load_preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise OptbenchError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    text = resources.files("optbench.presets").joinpath(f"{name}.toml").read_text()
    return _load_toml(text, f"preset {name}")


def load_config_dict(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise OptbenchError(f"config file {str(p)!r} not found; check the path given to --config")
    return _load_toml(p.read_text(), str(p))


def _check_keys(d: dict, allowed: set, where: str) -> None:
    for k in d:
        if k not in allowed:
            raise OptbenchError(
                f"{where}: unknown key {k!r}{did_you_mean(k, allowed)}; allowed: {', '.join(sorted(allowed))}"
            )


def _merge_block(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k in ("hparams", "task", "scheduler"):
            for name, params in v.items():
                out.setdefault(k, {}).setdefault(name, {}).update(params)
        else:
            out[k] = v
    return out


def _block_from_dict(d: dict, where: str) -> GridBlock:
    def lst(key, default):
        v = d.get(key, default)
        return list(v) if isinstance(v, (list, tuple)) else [v]

    clip = [0.0 if c in (None, "none", False) else c for c in lst("clip", [0.0])]
    for name, table in (("hparams", d.get("hparams", {})), ("task", d.get("task", {})),
                        ("scheduler", d.get("scheduler", {}))):
        if not isinstance(table, dict) or any(not isinstance(v, dict) for v in table.values()):
            raise OptbenchError(f"{where}: [{name}.NAME] tables must map names to key = value tables")
    for sect in ("task", "scheduler"):
        for name, params in d.get(sect, {}).items():
            for k, v in params.items():
                if isinstance(v, list):
                    raise OptbenchError(
                        f"{where}: {sect} {name!r} parameter {k!r} has a list; "
                        f"{sect} parameters take one value (grid over optimizer hyper-parameters instead)"
                    )
    return GridBlock(
        tasks=lst("tasks", []), optimizers=lst("optimizers", []), schedulers=lst("schedulers", ["constant"]),
        grad_modes=[str(g) for g in lst("grad_modes", ["zero"])], clip=clip, seeds=lst("seeds", [0]),
        steps=d.get("steps"), hparams=copy.deepcopy(d.get("hparams", {})),
        task_params=copy.deepcopy(d.get("task", {})), scheduler_params=copy.deepcopy(d.get("scheduler", {})),
    )


def spec_from_dict(d: dict, where: str) -> GridSpec:
    _check_keys(d, _TOP_KEYS, where)
    shared = {k: v for k, v in d.items() if k in _BLOCK_KEYS}
    grids = d.get("grid", [{}]) or [{}]
    blocks = []
    for i, g in enumerate(grids):
        _check_keys(g, _BLOCK_KEYS, f"{where} [[grid]] #{i + 1}")
        blocks.append(_block_from_dict(_merge_block(shared, g), f"{where} [[grid]] #{i + 1}"))
    return GridSpec(blocks=blocks, device=d.get("device", "cpu"), threads=d.get("threads"),
                    timeout=d.get("timeout"), name=d.get("name", where))


def apply_sets(spec: GridSpec, sets: list[str], reg) -> None:
    """Apply ``--set NAME.KEY=V1,V2`` (or ``KEY=...`` for every optimizer) to all blocks.

    NAME may be an optimizer (a list of values: a grid axis), a task or a
    scheduler (one value); ``optimizer:NAME``, ``task:NAME`` and
    ``scheduler:NAME`` remove any ambiguity.
    """
    for item in sets:
        if "=" not in item:
            raise OptbenchError(f"--set {item!r}: expected NAME.KEY=VALUE[,VALUE...], e.g. --set adam.lr=1e-3,1e-2")
        lhs, rhs = item.split("=", 1)
        values = parse_list(rhs)
        if "." not in lhs:
            kind, name, key = "optimizer", "*", lhs.strip()
        else:
            name, key = (s.strip() for s in lhs.split(".", 1))
            kind = None
            if ":" in name:
                kind, name = name.split(":", 1)
                if kind not in ("optimizer", "task", "scheduler"):
                    raise OptbenchError(f"--set {item!r}: prefix must be optimizer:, task: or scheduler:")
            else:
                kinds = [k for k in ("optimizer", "task", "scheduler") if name in reg.table(k)]
                if not kinds:
                    known = list(reg.optimizers) + list(reg.tasks) + list(reg.schedulers)
                    raise OptbenchError(
                        f"--set {item!r}: no optimizer, task or scheduler named {name!r}"
                        f"{did_you_mean(name, known)} (see `optbench list`)"
                    )
                if len(kinds) > 1:
                    raise OptbenchError(
                        f"--set {item!r}: {name!r} is both a {' and a '.join(kinds)}; "
                        f"write {kinds[0]}:{name}.{key}=... to choose"
                    )
                kind = kinds[0]
        for block in spec.blocks:
            if kind == "optimizer":
                block.hparams.setdefault(name, {})[key] = values
            else:
                if len(values) != 1:
                    raise OptbenchError(f"--set {item!r}: {kind} parameters take one value, got {len(values)}")
                table = block.task_params if kind == "task" else block.scheduler_params
                table.setdefault(name, {})[key] = values[0]


def set_data_path(spec: GridSpec, path: str, reg) -> None:
    """``--data PATH``: give every selected task that takes a ``data`` parameter this file."""
    hit = False
    for block in spec.blocks:
        for task in block.tasks:
            if task in reg.tasks and "data" in reg.tasks[task].defaults:
                block.task_params.setdefault(task, {})["data"] = str(Path(path).resolve())
                hit = True
    if not hit:
        raise OptbenchError("--data was given but no selected task reads data; drop it or add a model-5 task")


def build_spec(args, reg) -> GridSpec:
    """The grid for ``optbench grid`` from its parsed flags."""
    axis_flags = {k: getattr(args, k, None) for k in ("tasks", "optimizers", "schedulers", "grad_modes", "clip",
                                                       "seeds")}
    if args.config:
        spec = spec_from_dict(load_config_dict(args.config), args.config)
    elif args.preset or not any(v is not None for v in axis_flags.values()):
        name = args.preset or DEFAULT_PRESET
        spec = spec_from_dict(load_preset_dict(name), f"preset {name}")
        spec.name = name
    else:
        spec = GridSpec(blocks=[GridBlock()], name="cli")
    for block in spec.blocks:
        for k, v in axis_flags.items():
            if v is not None:
                setattr(block, k, v)
        if args.steps is not None:
            block.steps = args.steps
    if args.device:
        spec.device = args.device
    if args.threads is not None:
        spec.threads = args.threads
    if getattr(args, "timeout", None) is not None:
        spec.timeout = args.timeout
    apply_sets(spec, args.set or [], reg)
    if args.data:
        set_data_path(spec, args.data, reg)
    return spec


def block_dicts(spec: GridSpec) -> list[dict[str, Any]]:
    """The resolved grid as plain data, for meta.json."""
    from dataclasses import asdict

    return [asdict(b) for b in spec.blocks]
