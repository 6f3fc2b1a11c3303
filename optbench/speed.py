"""The speed table: what one optimizer step costs, for every installed optimizer.

``optbench speed`` and ``pytest benchmarks/`` time one ``optimizer.step()``
(gradients already in place) for every optimizer plugin in the registry, on
three standard parameter sets:

``scalar``         one 1-element float32 tensor: the pi task's weight, where a
                   step is nearly all framework overhead;
``model5-cpu``     the tensors of the model-5 ``cpu`` preset (GPT, 3 layers of
                   192, tied 50,257-token head: ~11M parameters in ~40 tensors),
                   shapes taken from ``optbench_tasks.model5`` when installed;
``synthetic-10m``  9.85M parameters in 50 tensors (25 matrices 768 x 512 and
                   their 25 bias vectors), the same for every installation.

Optimizers that declare the ``fused`` / ``foreach`` capabilities are timed in
each implementation (``fused``, ``foreach``, ``for-loop``), so the table shows
e.g. how much faster AdamW's fused kernel is than its for-loop on 10M
parameters.  Besides the optimizers the table has rows for gradient clipping
(``torch.nn.utils.clip_grad_norm_`` and the harness's own norm and clip) and
two pure-Python reference steps on floats (``python-sgd``, ``python-adam``)
that show how much of a toy step is framework overhead.

The timing itself is pytest-benchmark's: calibrated iterations per round,
rounds until ``max_time``, and its statistics (median, IQR...).  The pytest
module is :mod:`optbench.speed_bench`; ``optbench speed`` runs it in a child
``pytest --benchmark-json`` process and turns that JSON into the table with
:func:`table_from_benchmark_json`, so both entry points measure identically.
This module imports neither pytest nor pandas.

Columns of the CSV (``optbench speed -o speed_steps.csv``), one row per case:

``kind``                 optimizer | clip | python
``name``                 optimizer name in the registry (kind optimizer), else the operation
``variant``              fused | foreach | for-loop for optimizers with those capabilities,
                         ``default`` for the others, ``-`` for clip/python rows
``is_default``           True when the variant is what the plugin's defaults run on this device
``param_set``            scalar | model5-cpu | synthetic-10m
``n_params``, ``n_tensors``
``status``               ok | skipped | failed; ``reason`` says why when not ok
``median_s``, ``iqr_s``, ``q1_s``, ``q3_s``, ``mean_s``, ``stddev_s``, ``min_s``
                         seconds per step (pytest-benchmark statistics over rounds)
``rounds``, ``iterations``  pytest-benchmark's rounds and calls per round
``steps_per_s``          1 / median_s
``speedup_vs_forloop``   the same optimizer's for-loop median / this median (1.0 on the for-loop row)
``state_bytes``          bytes of tensors in ``optimizer.state`` after a step
``state_bytes_per_param``  state_bytes / n_params (8 for Adam in float32)
``param_bytes``
``optimizer_dist``, ``optimizer_version``  the plugin's distribution
``device``, ``dtype``, ``threads``, ``torch_version``, ``cpu``
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field

import pluggy

PARAM_SETS = ("scalar", "model5-cpu", "synthetic-10m")
KINDS = ("optimizer", "clip", "python")
#: environment variable through which ``optbench speed`` passes its selection to the pytest child
ENV = "OPTBENCH_SPEED"
#: environment variable naming a JSON-lines file where skipped/failed cases leave their reason
ENV_PROBLEMS = "OPTBENCH_SPEED_PROBLEMS"

COLUMNS = (
    "kind", "name", "variant", "is_default", "param_set", "n_params", "n_tensors", "status", "reason",
    "median_s", "iqr_s", "q1_s", "q3_s", "mean_s", "stddev_s", "min_s", "rounds", "iterations",
    "steps_per_s", "speedup_vs_forloop", "state_bytes", "state_bytes_per_param", "param_bytes",
    "optimizer_dist", "optimizer_version", "device", "dtype", "threads", "torch_version", "cpu",
)

#: synthetic-10m: (rows, cols) of each weight matrix, each followed by its bias
_SYNTH_LAYERS = 25
_SYNTH_SHAPE = (768, 512)
MAX_NORM = 1.0  # the clip rows clip to this norm


@dataclass(frozen=True)
class Case:
    """One row of the table: what is timed, on which parameter set."""

    kind: str
    name: str
    variant: str
    param_set: str
    #: hyper-parameters on top of the optimizer's defaults, as sorted (key, value) pairs
    overrides: tuple = ()
    is_default: bool = True

    @property
    def id(self) -> str:
        v = "" if self.variant in ("default", "-") else f"[{self.variant}]"
        return f"{self.param_set}-{self.name}{v}"


@dataclass
class Selection:
    """What to time; ``None`` means everything installed."""

    optimizers: list[str] | None = None
    param_sets: list[str] = field(default_factory=lambda: list(PARAM_SETS))
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    plugins: list[str] = field(default_factory=list)
    plugin_dirs: list[str] = field(default_factory=list)
    device: str = "cpu"
    threads: int | None = None

    def to_env(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_env(cls, environ=os.environ) -> "Selection":
        text = environ.get(ENV)
        return cls(**json.loads(text)) if text else cls()


# ----------------------------------------------------------------------------- cases

def default_variant(spec, device: str = "cpu") -> str:
    """Which implementation the plugin's defaults select on ``device``."""
    caps = spec.capabilities & {"fused", "foreach"}
    if not caps:
        return "default"
    d = spec.defaults
    if "fused" in caps and d.get("fused"):
        return "fused"
    if "foreach" in caps and d.get("foreach"):
        return "foreach"
    explicit_off = all(k in d and d[k] is False for k in caps)
    # torch's own default (foreach=None): foreach on accelerators, the for-loop on CPU
    if not explicit_off and not device.startswith("cpu"):
        return "foreach" if "foreach" in caps else "for-loop"
    return "for-loop"


def variants(spec, device: str = "cpu") -> list[tuple[str, dict]]:
    """(variant, overrides) for one optimizer spec: each implementation it declares, then the for-loop.

    Only the flags the spec declares are passed, so a factory that accepts just
    ``fused`` never receives ``foreach``.
    """
    caps = spec.capabilities & {"fused", "foreach"}
    if not caps:
        return [("default", {})]
    out = []
    if "fused" in caps:
        out.append(("fused", {"fused": True, **({"foreach": False} if "foreach" in caps else {})}))
    if "foreach" in caps:
        out.append(("foreach", {"foreach": True, **({"fused": False} if "fused" in caps else {})}))
    out.append(("for-loop", {k: False for k in sorted(caps)}))
    return out


def cases(reg, sel: Selection | None = None) -> list[Case]:
    """Every case of ``sel`` for the optimizers in ``reg``, in table order."""
    sel = sel or Selection()
    names = sorted(reg.optimizers) if sel.optimizers is None else list(sel.optimizers)
    out: list[Case] = []
    for ps in sel.param_sets:
        if "optimizer" in sel.kinds:
            for name in names:
                spec = reg.optimizers[name]
                dv = default_variant(spec, sel.device)
                for variant, over in variants(spec, sel.device):
                    out.append(Case("optimizer", name, variant, ps, tuple(sorted(over.items())), variant == dv))
        if "clip" in sel.kinds:
            for name in ("clip_grad_norm_", "optbench-grad-norm", "optbench-clip"):
                out.append(Case("clip", name, "-", ps))
        if "python" in sel.kinds and ps == "scalar":
            for name in ("python-sgd", "python-adam"):
                out.append(Case("python", name, "-", ps))
    return out


def check_selection(reg, sel: Selection) -> None:
    """One-line OptbenchError for an unknown optimizer, parameter set or kind."""
    from optbench.errors import OptbenchError, did_you_mean, unknown

    for name in sel.optimizers or ():
        if name not in reg.optimizers:
            raise unknown("optimizer", name, reg.optimizers)
    for ps in sel.param_sets:
        if ps not in PARAM_SETS:
            raise OptbenchError(f"unknown parameter set {ps!r}{did_you_mean(ps, PARAM_SETS)}; "
                                f"known: {', '.join(PARAM_SETS)}")
    for k in sel.kinds:
        if k not in KINDS:
            raise OptbenchError(f"unknown kind {k!r}{did_you_mean(k, KINDS)}; known: {', '.join(KINDS)}")


# ----------------------------------------------------------------------------- parameter sets

class ParamSetUnavailable(Exception):
    """The parameter set cannot be built here (e.g. the model-5 task is not installed)."""


def model5_shapes(size: str = "cpu") -> list[tuple[int, ...]]:
    """Parameter shapes of the model-5 ``size`` preset, from the installed task (no data, no memory).

    The model is built on torch's ``meta`` device, so nothing is allocated or
    initialised; tied weights count once, as ``model.parameters()`` lists them.
    """
    GPT, GPTConfig, SIZES = _model5()
    import torch

    s = SIZES[size]
    config = GPTConfig(block_size=s["seq_len"], n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"])
    with torch.device("meta"):
        model = GPT(config)
    return [tuple(p.shape) for p in model.parameters()]


def _model5():
    """(GPT, GPTConfig, SIZES) from the installed model-5 task, or ParamSetUnavailable saying why not."""
    try:
        from optbench_tasks.model5.gpt import GPT, GPTConfig
        from optbench_tasks.model5.task import SIZES
    except ImportError as exc:
        raise ParamSetUnavailable(
            f"the model-5 task (optbench_tasks.model5) is not installed ({exc}); install optbench with its "
            f"built-in tasks, or leave the set out with --sets scalar,synthetic-10m") from None
    return GPT, GPTConfig, SIZES


def model5_available() -> None:
    """Raise ParamSetUnavailable (with the reason and the fix) unless the model-5 shapes can be had."""
    _model5()


def param_shapes(name: str) -> list[tuple[int, ...]]:
    if name == "scalar":
        return [(1,)]
    if name == "synthetic-10m":
        return [s for _ in range(_SYNTH_LAYERS) for s in (_SYNTH_SHAPE, (_SYNTH_SHAPE[0],))]
    if name == "model5-cpu":
        return model5_shapes("cpu")
    raise ValueError(f"unknown parameter set {name!r}; known: {', '.join(PARAM_SETS)}")


_PARAMS: dict[tuple, list] = {}


def make_params(name: str, device: str = "cpu", seed: int = 0, shrink: int = 1):
    """Parameters of set ``name`` with ``.grad`` filled (normal(0, 1)); built once per process.

    The same tensors serve every case of a set: an optimizer keeps its state
    per optimizer object, so cases do not see each other's state, and
    parameter values do not change a step's cost.  ``shrink`` divides every
    dimension (same tensor count, ~1/shrink^2 the size): for smoke tests.
    """
    key = (name, device, shrink)
    if key not in _PARAMS:
        import torch

        g = torch.Generator().manual_seed(seed)
        params = []
        for shape in param_shapes(name):
            shape = tuple(max(1, d // shrink) for d in shape)
            p = torch.nn.Parameter((torch.randn(shape, generator=g) * 0.02).to(device))
            p.grad = torch.randn(shape, generator=g).to(device)
            params.append(p)
        _PARAMS[key] = params
    return _PARAMS[key]


# ----------------------------------------------------------------------------- what is timed

class Skip(Exception):
    """This case cannot be timed meaningfully (the reason is the message)."""


def prepare(case: Case, reg, device: str = "cpu", warm: bool = True, shrink: int = 1):
    """``(target, setup, info)`` for one case: ``target()`` is one step, ready to time.

    ``setup`` is None, or a function to run before every call (pedantic mode).
    ``warm``: take one step first, so that the optimizer's state exists and the
    timed steps are steady-state steps; ``info["state_bytes"]`` is then filled
    (else call ``info["measure_state"]()`` after a step).  Raises :class:`Skip`
    or :class:`ParamSetUnavailable` for cases that cannot run, and lets a
    plugin's own exception through (the benchmark then fails).
    """
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    if case.kind == "python":
        return _python_step(case.name), None, {"n_params": 1, "n_tensors": 0, "state_bytes": 0, "param_bytes": 0}
    params = make_params(case.param_set, device, shrink=shrink)
    info = {"n_params": sum(p.numel() for p in params), "n_tensors": len(params),
            "param_bytes": sum(p.numel() * p.element_size() for p in params), "state_bytes": 0}
    if case.kind == "clip":
        target, setup = _clip_step(case.name, params)
    else:
        from optbench.runner import state_bytes

        spec = reg.optimizers[case.name]
        caps = spec.capabilities
        if "create_graph" in caps:
            raise Skip("needs second-order gradients (create_graph): a step's cost includes its own backward")
        opt = spec.factory(params, **{**spec.defaults, **dict(case.overrides)})
        if "train_eval" in caps:
            opt.train()
        if "closure" in caps:
            loss = torch.zeros((), device=device)

            def closure():  # gradients are already in place; the closure only hands back the loss
                return loss

            def target():
                opt.step(closure)
        else:
            target = opt.step
        setup = None
        info["measure_state"] = lambda: info.update(state_bytes=state_bytes(opt))
        if warm:
            target()
            info["measure_state"]()
    if sync is not None:
        inner = target

        def target():
            inner()
            sync()
    return target, setup, info


def _clip_step(name: str, params):
    import torch

    from optbench.runner import _SMALL, clip_grad_norm, grad_norm

    if name == "clip_grad_norm_":
        return (lambda: torch.nn.utils.clip_grad_norm_(params, MAX_NORM)), None
    if name == "optbench-grad-norm":
        small = sum(p.numel() for p in params) <= _SMALL
        return (lambda: grad_norm(params, small)), None
    if name == "optbench-clip":
        # restore the gradients before every call, so every timed call really clips
        saved = [p.grad.clone() for p in params]

        def setup():
            torch._foreach_copy_([p.grad for p in params], saved)

        return (lambda: clip_grad_norm(params, MAX_NORM)), setup
    raise ValueError(name)


def _python_step(name: str):
    """A pure-Python step on floats: the floor a framework step is compared against."""
    if name == "python-sgd":
        s = [0.0, 0.5]  # w, g
        lr = 0.01

        def step():
            s[0] -= lr * s[1]

        return step
    if name == "python-adam":
        sqrt = math.sqrt
        st = {"w": 0.0, "g": 0.5, "m": 0.0, "v": 0.0, "t": 0}
        lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8

        def step():
            t = st["t"] = st["t"] + 1
            g = st["g"]
            m = st["m"] = b1 * st["m"] + (1 - b1) * g
            v = st["v"] = b2 * st["v"] + (1 - b2) * g * g
            st["w"] -= lr * (m / (1 - b1 ** t)) / (sqrt(v / (1 - b2 ** t)) + eps)

        return step
    raise ValueError(name)


def run_case(benchmark, case: Case, reg, device: str = "cpu", max_time: float = 1.0, min_rounds: int = 5):
    """Time ``case`` with the pytest-benchmark fixture ``benchmark``; fill its extra_info.

    With ``--benchmark-disable`` the case runs once, without the warm-up step and on
    parameter sets shrunk 16x per dimension (same tensor count): a quick smoke test.
    """
    disabled = bool(getattr(benchmark, "disabled", False))
    target, setup, info = prepare(case, reg, device, warm=not disabled, shrink=16 if disabled else 1)
    measure_state = info.pop("measure_state", None)
    benchmark.group = case.param_set
    if setup is None:
        benchmark(target)
    else:
        # pedantic mode (setup before every call): choose rounds as the calibrated mode would
        import time

        rounds = 1
        if not disabled:
            setup()
            t0 = time.perf_counter()
            target()
            once = max(time.perf_counter() - t0, 1e-7)
            rounds = int(min(max(min_rounds, max_time / (once * 3)), 100_000))  # setup costs ~2 calls
        benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
    if disabled and measure_state is not None:
        measure_state()
    benchmark.extra_info.update(case_info(case, reg, device), **info)


def case_info(case: Case, reg, device: str) -> dict:
    import torch

    from optbench.meta import cpu_name

    info = {"kind": case.kind, "name": case.name, "variant": case.variant, "param_set": case.param_set,
            "is_default": case.is_default, "device": device, "dtype": "float32",
            "threads": torch.get_num_threads(), "torch_version": torch.__version__, "cpu": cpu_name(),
            "optimizer_dist": "", "optimizer_version": ""}
    if case.kind == "optimizer":
        o = reg.origin("optimizer", case.name)
        info.update(optimizer_dist=o.dist, optimizer_version=o.version)
    return info


# ----------------------------------------------------------------------------- pytest-benchmark hook

@pluggy.HookimplMarker("pytest")(tryfirst=True)  # what pytest.hookimpl is, without importing pytest
def pytest_benchmark_generate_machine_info(config):
    """pytest-benchmark's machine_info without py-cpuinfo, which takes ~1.4 s here to name the CPU.

    Registered by ``optbench speed`` (``-p optbench.speed``) and by benchmarks/conftest.py.
    """
    import platform

    import torch

    from optbench.meta import cpu_name

    return {
        "node": platform.node(), "processor": platform.processor(), "machine": platform.machine(),
        "python_implementation": platform.python_implementation(), "python_version": platform.python_version(),
        "release": platform.release(), "system": platform.system(),
        "cpu": {"brand_raw": cpu_name(), "count": os.cpu_count()},
        "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- the table

def record_problem(case: Case, status: str, reason: str) -> None:
    """Leave a skipped/failed case's reason where ``optbench speed`` will find it."""
    path = os.environ.get(ENV_PROBLEMS)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"id": case.id, "status": status, "reason": reason}) + "\n")


def read_problems(path) -> dict[str, dict]:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    out[d["id"]] = d
    except FileNotFoundError:
        pass
    return out


def table_from_benchmark_json(data: dict, expected: list[Case] | None = None,
                              problems: dict[str, dict] | None = None) -> list[dict]:
    """Rows of the speed table from pytest-benchmark's JSON (``--benchmark-json``).

    ``expected`` cases missing from the JSON become rows with status
    ``skipped``/``failed`` and the reason from ``problems`` (or "no result").
    """
    problems = problems or {}
    rows: dict[str, dict] = {}
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "kind" not in info:
            continue  # another benchmark of the suite (e.g. harness overhead)
        st = b["stats"]
        row = {c: info.get(c, "") for c in COLUMNS}
        median = st["median"]
        row.update(
            status="ok", reason="", median_s=median, iqr_s=st["iqr"], q1_s=st["q1"], q3_s=st["q3"],
            mean_s=st["mean"], stddev_s=st["stddev"], min_s=st["min"], rounds=st["rounds"],
            iterations=st.get("iterations", 1), steps_per_s=1.0 / median if median > 0 else math.nan,
        )
        n = row["n_params"] or 0
        row["state_bytes_per_param"] = row["state_bytes"] / n if n and row["kind"] == "optimizer" else math.nan
        rows[_row_id(row)] = row
    for case in expected or ():
        if case.id not in rows:
            p = problems.get(case.id, {"status": "failed", "reason": "no result (see the pytest output above)"})
            row = {c: "" for c in COLUMNS}
            row.update(kind=case.kind, name=case.name, variant=case.variant, param_set=case.param_set,
                       is_default=case.is_default, status=p["status"], reason=p["reason"])
            for c in COLUMNS[9:23]:
                row[c] = math.nan
            rows[case.id] = row
    out = list(rows.values())
    if expected:
        order = {c.id: i for i, c in enumerate(expected)}
        out.sort(key=lambda r: order.get(_row_id(r), len(order)))
    _add_speedups(out)
    return out


def _row_id(row: dict) -> str:
    return Case(row["kind"], row["name"], row["variant"], row["param_set"]).id


def _add_speedups(rows: list[dict]) -> None:
    loops = {(r["name"], r["param_set"]): r["median_s"] for r in rows
             if r["kind"] == "optimizer" and r["variant"] == "for-loop" and r["status"] == "ok"}
    for r in rows:
        base = loops.get((r["name"], r["param_set"]))
        ok = r["status"] == "ok" and base is not None and r["median_s"] > 0
        r["speedup_vs_forloop"] = base / r["median_s"] if ok else math.nan


def _fmt_csv(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def to_csv(rows: list[dict]) -> str:
    """CSV text, columns in :data:`COLUMNS` order; NaN as an empty field (as pandas writes it)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_fmt_csv(r.get(c, "")) for c in COLUMNS])
    return buf.getvalue()


def read_csv(path) -> list[dict]:
    """Rows of a speed CSV with numbers parsed back (no pandas needed)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k in ("is_default",):
                r[k] = v == "True"
            elif k in COLUMNS[9:23] or k in ("n_params", "n_tensors", "threads"):
                try:
                    r[k] = float(v) if v != "" else math.nan
                except ValueError:
                    pass
    return rows


def _time(s: float) -> str:
    if s != s:
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        if s * f >= 1 or unit == "ns":
            return f"{s * f:.3g} {unit}"
    return f"{s:.3g} s"


def _rate(x: float) -> str:
    return "-" if x != x else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def format_table(rows: list[dict]) -> str:
    """A terminal table: one block per parameter set, fastest first within a kind."""
    lines = []
    head = ("name", "variant", "median", "IQR", "steps/s", "vs loop", "state/param", "")
    for ps in dict.fromkeys(r["param_set"] for r in rows):
        sub = [r for r in rows if r["param_set"] == ps]
        n = next((r["n_params"] for r in sub if r["status"] == "ok" and r["kind"] != "python"), "")
        t = next((r["n_tensors"] for r in sub if r["status"] == "ok" and r["kind"] != "python"), "")
        if n != "":
            n, t = int(n), int(t)
            lines.append(f"{ps} ({n:,} parameter{'s' * (n != 1)} in {t} tensor{'s' * (t != 1)})")
        else:
            lines.append(ps)
        body = []
        for r in sub:
            if r["status"] != "ok":
                body.append((r["name"], r["variant"], r["status"], "", "", "", "", r["reason"]))
                continue
            sp = r["speedup_vs_forloop"]
            spp = r["state_bytes_per_param"]
            body.append((
                r["name"], r["variant"] + (" *" if r["is_default"] and r["kind"] == "optimizer" else ""),
                _time(r["median_s"]), _time(r["iqr_s"]), _rate(r["steps_per_s"]),
                "" if sp != sp else f"{sp:.2f}x", "" if spp != spp else f"{spp:.3g} B", ""))
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
        lines.append("  " + "  ".join(str(h).ljust(w) if i < 2 else str(h).rjust(w)
                                      for i, (h, w) in enumerate(zip(head, widths))).rstrip())
        for b in body:
            lines.append("  " + "  ".join(str(x).ljust(w) if i < 2 or i == 7 else str(x).rjust(w)
                                          for i, (x, w) in enumerate(zip(b, widths))).rstrip())
        lines.append("")
    lines.append("* = the variant the plugin's defaults run; vs loop = for-loop median / this median")
    return "\n".join(lines)
