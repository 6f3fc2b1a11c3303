"""``optbench check``: run the conformance kit on optimizer plugins (see optbench.conformance)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="check that optimizer plugins behave (the conformance kit)",
        description="Check optimizer plugins: the spec, building on sample parameters, param groups, None and "
                    "zero gradients, state_dict round-trip, determinism, declared capabilities, and convergence "
                    "on the pi and l2-bowl tasks. Exits 1 if any check fails.")
    p.add_argument("names", nargs="*", metavar="NAME", help="optimizer names (see `optbench list`)")
    p.add_argument("--all", action="store_true", help="check every installed optimizer")
    p.add_argument("--only", metavar="CHECK[,CHECK...]", help="run only these checks, e.g. state-dict,determinism")
    p.add_argument("--steps", type=int, help="step budget of the convergence checks (default: each task's steps)")
    p.set_defaults(func=run)


def run(args) -> int:
    from optbench import conformance
    from optbench.cli import load_registry
    from optbench.errors import OptbenchError, unknown

    reg = load_registry(args)
    names = sorted(reg.optimizers) if args.all else list(dict.fromkeys(args.names))
    if not names:
        raise OptbenchError("name the optimizers to check (`optbench check lion`), or pass --all")
    for n in names:
        if n not in reg.optimizers:
            raise unknown("optimizer", n, reg.optimizers)
    only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else None
    failed: dict[str, list[str]] = {}
    for n in names:
        results = conformance.run_checks(n, reg, only=only, steps=args.steps)
        print(conformance.format_results(f"{n} (from {reg.origin('optimizer', n).label})", results),
              flush=True)
        bad = [r.name for r in results if r.failed]
        if bad:
            failed[n] = bad
    print()
    if failed:
        detail = "; ".join(f"{n}: {', '.join(checks)}" for n, checks in failed.items())
        print(f"{len(failed)} of {len(names)} optimizers failed the conformance kit ({detail})")
        return 1
    print(f"{len(names)} optimizer{'s' if len(names) != 1 else ''} passed the conformance kit")
    return 0
