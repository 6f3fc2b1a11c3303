"""``optbench list``: every optimizer, scheduler and task, with defaults and origin."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("list", help="list every optimizer, scheduler and task plugin")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _fmt(defaults) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in defaults.items()) or "-"


def run(args) -> int:
    from optbench.cli import load_registry

    reg = load_registry(args)
    if args.json:
        from optbench.meta import plugin_table

        table = plugin_table(reg)
        for kind in table:
            for name, row in table[kind].items():
                spec = reg.get(kind, name)
                row["defaults"] = dict(getattr(spec, "defaults", {}))
                row["description"] = spec.description
        print(json.dumps({**table, "problems": reg.problems}, indent=2, default=str))
        return 0
    for kind, title in (("optimizer", "optimizers"), ("scheduler", "schedulers"), ("task", "tasks")):
        table = reg.table(kind)
        print(f"{title} ({len(table)})")
        width = max((len(n) for n in table), default=0)
        for name in sorted(table):
            spec, origin = table[name], reg.origin(kind, name)
            extra = ""
            if kind == "optimizer" and spec.capabilities:
                extra = f"  [{', '.join(sorted(spec.capabilities))}]"
            if kind == "task":
                extra = f"  steps={spec.steps} target: {spec.target_metric} <= {spec.target_value}"
            print(f"  {name:<{width}}  {spec.description}")
            print(f"  {'':<{width}}    from {origin.label} ({origin.module}){extra}")
            print(f"  {'':<{width}}    defaults: {_fmt(spec.defaults)}")
        print()
    return 0
