"""The conformance kit: what an optimizer plugin must do for its benchmark numbers to mean anything.

Each check is a plain function ``check(spec, reg) -> list[CheckResult]``.  A
failed result says, in plain words, what was expected, what happened and
what to change.  ``optbench check NAME`` and the pytest plugin
(``optbench.testing``) both run :func:`run_checks`; call it yourself for a
spec object that is not installed::

    from optbench.conformance import run_checks
    for r in run_checks(my_spec):
        print(r)

The checks drive the optimizer the way the harness does (``optbench.runner``):
``.train()`` first for ``train_eval`` optimizers, a closure for ``closure``
ones, ``backward(create_graph=True)`` for ``create_graph`` ones.  The
convergence checks go through the runner itself, on the built-in ``pi`` and
``l2-bowl`` tasks, trying each learning rate of the spec's suggested grid.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import traceback
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from optbench.errors import OptbenchError, unknown
from optbench.specs import CAPABILITIES, OptimizerSpec

#: final loss must be at most this fraction of the first loss on a convergence task
CONVERGENCE_FACTOR = 0.1
CONVERGENCE_TASKS = ("pi", "l2-bowl")
#: characters that break the command line: --optimizers a,b / --set NAME.KEY=V / KIND:NAME
_NAME_BREAKERS = ",.:="


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    explanation: str = ""
    #: the check does not apply (a task the spec marks unsupported) or could not run
    #: because an earlier check failed; neither a pass nor a failure
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return not self.passed and not self.skipped

    def __str__(self) -> str:
        status = "skip" if self.skipped else "ok" if self.passed else "FAIL"
        return f"{status:<4}  {self.name}" + (f": {self.explanation}" if self.explanation else "")


def _ok(name: str, note: str = "") -> list[CheckResult]:
    return [CheckResult(name, True, note)]


def _fail(name: str, explanation: str) -> list[CheckResult]:
    return [CheckResult(name, False, explanation)]


def _skip(name: str, why: str) -> list[CheckResult]:
    return [CheckResult(name, False, why, skipped=True)]


# --------------------------------------------------------------------------- the spec


def _factory_signature(factory) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # some C-implemented callables have none
        return None


def _is_plain_value(v) -> bool:
    # Hyper-parameters end up in hashable run configs and in JSON cache keys.
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, tuple) and all(_is_plain_value(x) for x in v)


def check_spec(spec, reg=None) -> list[CheckResult]:
    """Types and names of the spec; ``defaults`` match the factory's keywords."""
    if not isinstance(spec, OptimizerSpec):
        return _fail("spec", f"expected an optbench.OptimizerSpec, got {type(spec).__name__}; "
                             f"return OptimizerSpec(name, factory, defaults) from optbench_optimizers()")
    problems: list[str] = []
    name = spec.name
    if not isinstance(name, str) or not name:
        problems.append(f"name is {name!r}; use a short non-empty string such as 'my-opt'")
    elif set(name) & set(_NAME_BREAKERS) or any(c.isspace() for c in name):
        problems.append(f"name {name!r} contains whitespace or one of {_NAME_BREAKERS!r}, which split "
                        f"`--optimizers a,b` and `--set NAME.KEY=V`; use letters, digits, '-' and '_'")
    if not callable(spec.factory):
        problems.append(f"factory is {type(spec.factory).__name__}, not callable; pass a function "
                        f"`factory(params, **hparams)` that returns a torch.optim.Optimizer")
    if not isinstance(spec.version, str) or not spec.version:
        problems.append(f"version is {spec.version!r}; use a string such as '1' and bump it when behaviour "
                        f"changes, so cached results are not reused")
    if not isinstance(spec.description, str):
        problems.append(f"description is {type(spec.description).__name__}, not a string")
    if not isinstance(spec.defaults, Mapping):
        problems.append(f"defaults is {type(spec.defaults).__name__}; use a dict of hyper-parameter values")
    else:
        for k, v in spec.defaults.items():
            if not isinstance(k, str):
                problems.append(f"defaults key {k!r} is not a string")
            elif not _is_plain_value(v):
                problems.append(f"defaults[{k!r}] = {v!r} is a {type(v).__name__}; hyper-parameters must be "
                                f"numbers, bools, strings or None (split tuples into flat keys such as "
                                f"beta1/beta2, so that each can be a grid axis)")
        sig = _factory_signature(spec.factory) if callable(spec.factory) else None
        if sig is not None:
            problems += _signature_problems(sig, spec.defaults)
    if not isinstance(spec.grid, Mapping):
        problems.append(f"grid is {type(spec.grid).__name__}; use a dict such as {{'lr': [1e-3, 1e-2]}}")
    else:
        for k, values in spec.grid.items():
            if isinstance(spec.defaults, Mapping) and k not in spec.defaults:
                problems.append(f"grid key {k!r} is not in defaults, so the grid could never set it; "
                                f"add a default for it")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                problems.append(f"grid[{k!r}] = {values!r}; use a non-empty list of values")
        for lr in spec.grid.get("lr", []) if isinstance(spec.grid, Mapping) else []:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
                problems.append(f"grid['lr'] holds {lr!r}; learning rates are positive numbers")
    if not isinstance(spec.unsupported, Mapping):
        problems.append(f"unsupported is {type(spec.unsupported).__name__}; use {{task name: reason}}")
    else:
        for task, reason in spec.unsupported.items():
            if not isinstance(reason, str) or not reason.strip():
                problems.append(f"unsupported[{task!r}] has no reason; say why, it is shown for skipped runs")
    unknown_caps = set(spec.capabilities) - CAPABILITIES
    if unknown_caps:
        problems.append(f"unknown capabilities {sorted(unknown_caps)}; known: {sorted(CAPABILITIES)}")
    if problems:
        return _fail("spec", "; ".join(problems))
    return _ok("spec")


def _signature_problems(sig: inspect.Signature, defaults: Mapping) -> list[str]:
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        return [f"factory{sig} takes no positional argument; it is called as factory(params, **hparams)"]
    rest = {p.name: p for p in params if p is not positional[0]}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    problems = []
    keywords = {n for n, p in rest.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for k in defaults:
        if k not in keywords and not takes_kwargs:
            problems.append(f"defaults has {k!r} but the factory has no such keyword argument "
                            f"(its keywords: {', '.join(sorted(keywords)) or 'none'})")
    for n, p in rest.items():
        required = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        if required and n not in defaults:
            problems.append(f"the factory requires {n!r} but defaults has no value for it, so a run with "
                            f"defaults fails; add defaults[{n!r}]")
    return problems


# --------------------------------------------------------------------------- driving an optimizer


class _Quadratic:
    """Sample parameters and a separable quadratic loss over them.

    Shapes cover what models have: a one-element tensor, a vector, a matrix and
    a 3-d tensor.  ``active`` limits the loss to some parameters, so the others
    get ``grad is None``; ``scale=0`` gives exactly zero gradients through the
    same code path (create_graph and closures included).
    """

    SHAPES = ((1,), (5,), (4, 3), (2, 3, 4))

    def __init__(self, seed: int = 0):
        # its own generator: the sample is the same whatever the global seed
        g = torch.Generator().manual_seed(seed)
        self.params = [torch.randn(s, generator=g).requires_grad_() for s in self.SHAPES]
        self.targets = [torch.randn(s, generator=g) for s in self.SHAPES]
        self.curv = [0.5 + 1.5 * torch.rand(s, generator=g) for s in self.SHAPES]
        self.active = list(range(len(self.params)))
        self.scale = 1.0

    def groups(self, group_lr: float | None = None) -> list:
        """One list of tensors, or with ``group_lr`` two param groups, the second with that lr."""
        if group_lr is None:
            return list(self.params)
        return [{"params": self.params[:2]}, {"params": self.params[2:], "lr": group_lr}]

    def loss(self) -> torch.Tensor:
        total = sum((self.curv[i] * (self.params[i] - self.targets[i]) ** 2).sum() for i in self.active)
        return self.scale * total

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def copy(self) -> "_Quadratic":
        other = _Quadratic.__new__(_Quadratic)
        other.params = [p.detach().clone().requires_grad_() for p in self.params]
        other.targets, other.curv, other.active, other.scale = self.targets, self.curv, list(self.active), self.scale
        return other


def _build(spec: OptimizerSpec, problem: _Quadratic, group_lr: float | None = None, **overrides):
    opt = spec.factory(problem.groups(group_lr), **{**spec.defaults, **overrides})
    if "train_eval" in spec.capabilities:
        opt.train()
    return opt


def _step(spec: OptimizerSpec, opt, problem: _Quadratic) -> None:
    """One optimizer step exactly as ``runner._train`` drives it."""
    create_graph = "create_graph" in spec.capabilities

    def forward_backward():
        opt.zero_grad(set_to_none=True)
        loss = problem.loss()
        loss.backward(create_graph=create_graph)
        return loss.detach()

    forward_backward()
    if "closure" in spec.capabilities:
        def closure():
            with torch.enable_grad():
                return forward_backward()

        opt.step(closure)
    else:
        opt.step()


def _seed(seed: int) -> None:
    from optbench.runner import _seed_everything  # the harness's own seeding, so checks see what runs see

    _seed_everything(seed)


def _explain_error(exc: BaseException, spec: OptimizerSpec, opt=None) -> str:
    """The exception in one line, where it happened, and the fix it most likely needs."""
    # the innermost frame in the plugin or its library: the kit's own frames say nothing to the author
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first}{where}"
    msg = str(exc).lower()
    caps = spec.capabilities
    hint = ""
    if "closure" in msg and "closure" not in caps:
        hint = "the optimizer wants a closure: declare capabilities={'closure'} so the harness passes one to step()"
    elif "train" in msg and "mode" in msg and "train_eval" not in caps:
        hint = ("the optimizer has train/eval modes: declare capabilities={'train_eval'} so the harness calls "
                ".train() before training and .eval() around evaluation")
    elif "does not require grad" in msg and "create_graph" not in caps:
        hint = ("the optimizer differentiates the gradient: declare capabilities={'create_graph'} so the harness "
                "calls backward(create_graph=True)")
    elif isinstance(exc, AttributeError) and "'train'" in msg and "train_eval" in caps:
        hint = "the spec declares 'train_eval' but the optimizer has no .train()/.eval(); drop the capability"
    elif isinstance(exc, TypeError) and "keyword argument" in msg:
        hint = "every key of defaults is passed to the factory as a keyword; make them match"
    elif opt is not None and "train_eval" not in caps and callable(getattr(opt, "train", None)):
        hint = "the optimizer has .train(); if it has train/eval modes, declare capabilities={'train_eval'}"
    return f"{text}; hint: {hint}" if hint else text


def _state_tensors(opt) -> list[torch.Tensor]:
    return [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]


def _nonfinite(tensors) -> bool:
    return any(not torch.isfinite(t.detach()).all() for t in tensors if t.is_floating_point())


def _max_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# --------------------------------------------------------------------------- step-level checks


def check_build(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """Build on four tensors of different shapes in two param groups and take steps."""
    problem = _Quadratic()
    before = problem.snapshot()
    opt = None
    try:
        opt = _build(spec, problem)
    except Exception as exc:
        return _fail("build", f"factory(params, **defaults) raised {_explain_error(exc, spec)}")
    if not isinstance(opt, torch.optim.Optimizer):
        return _fail("build", f"the factory returned {type(opt).__name__}, expected a torch.optim.Optimizer "
                              f"(learning-rate schedules refuse anything else); return the optimizer object")
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    if sorted(seen) != sorted(id(p) for p in problem.params):
        return _fail("build", f"given {len(problem.params)} tensors, the optimizer's param_groups hold "
                              f"{len(seen)} tensor(s), not the same ones; pass `params` through to the "
                              f"optimizer unchanged")
    try:
        for _ in range(3):
            _step(spec, opt, problem)
    except Exception as exc:
        return _fail("build", f"step() raised {_explain_error(exc, spec, opt)}")
    after = problem.snapshot()
    for i, (p, a, b) in enumerate(zip(problem.params, before, after)):
        if b.shape != a.shape or b.dtype != a.dtype:
            return _fail("build", f"parameter {i} changed from {tuple(a.shape)} {a.dtype} to {tuple(b.shape)} "
                                  f"{b.dtype}; update parameters in place")
        if _nonfinite([b]):
            return _fail("build", f"parameter {i} (shape {tuple(a.shape)}) is NaN or inf after 3 steps on a "
                                  f"well-conditioned quadratic at the default hyper-parameters")
        if torch.equal(a, b):
            return _fail("build", f"parameter {i} (shape {tuple(a.shape)}) did not move in 3 steps with "
                                  f"non-zero gradients; the optimizer must update every parameter")
    return _ok("build")


def check_param_groups(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """A second param group's own lr is kept and used.  Refusing param groups loudly
    (LBFGS, Prodigy) is allowed; silently ignoring the group's lr is not."""
    if "lr" not in spec.defaults:
        return _skip("param-groups", "the spec has no 'lr' hyper-parameter")
    lr = spec.defaults["lr"]
    finals = {}
    for group_lr in (lr / 2, lr):
        problem = _Quadratic()
        try:
            opt = _build(spec, problem, group_lr=group_lr)
            _step(spec, opt, problem)
        except Exception as exc:
            return _skip("param-groups", f"the optimizer refuses two param groups with their own lr "
                                         f"({_explain_error(exc, spec)}); a model that uses them fails with "
                                         f"this error")
        got = [g.get("lr") for g in opt.param_groups]
        if got != [lr, group_lr]:
            return _fail("param-groups", f"built with lr={lr:g} and a second group with lr={group_lr:g}, the "
                                         f"optimizer's groups have lr={got}; per-group options must override "
                                         f"the defaults, as in torch.optim")
        finals[group_lr] = problem.snapshot()[2:]
    if _max_diff(finals[lr / 2], finals[lr]) == 0:
        return _fail("param-groups", f"the second group took the same step with lr={lr / 2:g} as with lr={lr:g}: "
                                     f"step() ignores the group's lr; read group['lr'] for each group, not "
                                     f"self.defaults['lr']")
    return _ok("param-groups")


def check_none_grads(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """zero_grad()/step() cope with parameters whose grad is None, and leave them alone."""
    problem = _Quadratic()
    problem.active = [0, 2]  # parameters 1 and 3 never get a gradient
    try:
        opt = _build(spec, problem)
        opt.zero_grad()  # before any backward: every grad is None
        before = problem.snapshot()
        if "closure" not in spec.capabilities:
            opt.step()  # a step with no gradient at all, e.g. a frozen model
            if _max_diff(before, problem.snapshot()) != 0:
                return _fail("none-grads", "step() with every grad None changed parameters; skip parameters "
                                           "whose .grad is None, as torch.optim does")
        for _ in range(2):
            _step(spec, opt, problem)
    except Exception as exc:
        return _fail("none-grads", f"with some grads None, {_explain_error(exc, spec)}; skip parameters whose "
                                   f".grad is None (`if p.grad is None: continue`)")
    after = problem.snapshot()
    for i in (1, 3):
        if not torch.equal(before[i], after[i]):
            return _fail("none-grads", f"parameter {i} had grad None on every step but moved by "
                                       f"{float((after[i] - before[i]).abs().max()):.3g}; torch.optim leaves such "
                                       f"parameters (frozen or unused) untouched, weight decay included")
    if _nonfinite(after):
        return _fail("none-grads", "parameters became NaN or inf when some grads were None")
    return _ok("none-grads")


def check_zero_grads(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """Exactly zero gradients (a dead unit, a converged weight) must not produce NaN or inf."""
    problem = _Quadratic()
    problem.scale = 0.0
    opt = None
    try:
        opt = _build(spec, problem)
        for _ in range(5):
            _step(spec, opt, problem)
    except Exception as exc:
        return _fail("zero-grads", f"with all-zero gradients, {_explain_error(exc, spec, opt)}")
    if _nonfinite(problem.params):
        return _fail("zero-grads", "after 5 steps with all-zero gradients some parameters are NaN or inf; "
                                   "guard divisions by gradient statistics with an eps (e.g. g / (sqrt(v) + eps))")
    if _nonfinite(_state_tensors(opt)):
        return _fail("zero-grads", "after 5 steps with all-zero gradients the optimizer state holds NaN or inf, "
                                   "which poisons every later step; guard divisions with an eps")
    return _ok("zero-grads")


def check_state_dict(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """Checkpoint after 3 steps, load into a fresh optimizer: the next steps must be identical."""
    problem = _Quadratic()
    opt = None
    try:
        opt = _build(spec, problem)
        for _ in range(3):
            _step(spec, opt, problem)
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
    except Exception as exc:
        return _fail("state-dict", f"saving the state_dict raised {_explain_error(exc, spec, opt)}")
    buf.seek(0)
    try:
        saved = torch.load(buf, weights_only=True)
    except Exception as exc:
        return _fail("state-dict", f"torch.load(weights_only=True), the default, refuses the saved state_dict "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0]}); keep only tensors, "
                                   f"numbers, strings, lists and dicts in state and param_groups")
    resumed = problem.copy()
    try:
        fresh = _build(spec, resumed)
        fresh.load_state_dict(saved)
    except Exception as exc:
        return _fail("state-dict", f"load_state_dict() into a fresh optimizer raised {_explain_error(exc, spec)}")
    try:
        for which, (o, p) in enumerate(((opt, problem), (fresh, resumed))):
            _seed(1)  # stochastic optimizers draw the same numbers on both sides
            for _ in range(3):
                _step(spec, o, p)
    except Exception as exc:
        side = "the resumed" if which else "the original"
        return _fail("state-dict", f"stepping {side} optimizer after the round-trip raised "
                                   f"{_explain_error(exc, spec)}")
    diff = _max_diff(problem.snapshot(), resumed.snapshot())
    if diff != 0:
        return _fail("state-dict", f"3 steps after loading the state_dict into a fresh optimizer differ from 3 "
                                   f"steps of the original by up to {diff:.3g}; keep all state in self.state and "
                                   f"param_groups (not in Python attributes), or override "
                                   f"state_dict()/load_state_dict()")
    return _ok("state-dict")


def check_determinism(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """Two runs under the same seed give bit-identical parameters."""
    finals = []
    try:
        for _ in range(2):
            _seed(0)
            problem = _Quadratic()
            opt = _build(spec, problem)
            for _ in range(5):
                _step(spec, opt, problem)
            finals.append(problem.snapshot())
    except Exception as exc:
        return _fail("determinism", _explain_error(exc, spec))
    diff = _max_diff(*finals)
    if diff != 0:
        return _fail("determinism", f"two runs seeded alike differ by up to {diff:.3g} after 5 steps; draw random "
                                    f"numbers from torch's global generator (seeded by the harness) or from one "
                                    f"you seed, never from time or os.urandom")
    return _ok("determinism")


def check_capabilities(spec: OptimizerSpec, reg=None) -> list[CheckResult]:
    """Capabilities match the optimizer: train/eval methods are declared, fused/foreach flags work and agree."""
    problems = []
    try:
        opt = _build(spec, _Quadratic())
    except Exception as exc:
        return _fail("capabilities", _explain_error(exc, spec))
    # (a declared train_eval without the methods already fails to build: _build calls .train())
    has_modes = callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None))
    if "train_eval" not in spec.capabilities and has_modes:
        problems.append(f"{type(opt).__name__} has .train()/.eval() but the spec does not declare 'train_eval', "
                        f"so the harness never calls them; add it to capabilities")
    sig = _factory_signature(spec.factory)
    declared = {"fused", "foreach"} & spec.capabilities
    accepted = {f for f in declared if sig is None or f in sig.parameters
                or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())}
    for flag in sorted(declared - accepted):
        problems.append(f"declares {flag!r} but the factory has no {flag!r} keyword; add "
                        f"`{flag}=None` and pass it to the optimizer, or drop the capability")
    for flag in sorted(accepted):
        # torch refuses fused=True together with foreach=True: pin the other flag off
        other = accepted - {flag}
        finals = {}
        for value in (True, False):
            problem = _Quadratic()
            try:
                o = _build(spec, problem, **{flag: value}, **{k: False for k in other})
                for _ in range(3):
                    _step(spec, o, problem)
            except Exception as exc:
                problems.append(f"{flag}={value} fails: {_explain_error(exc, spec)}")
                break
            finals[value] = problem.snapshot()
        if len(finals) == 2:
            diff = _max_diff(finals[True], finals[False])
            if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(finals[True], finals[False])):
                problems.append(f"{flag}=True and {flag}=False disagree by up to {diff:.3g} after 3 steps; "
                                f"both must compute the same update")
    return _fail("capabilities", "; ".join(problems)) if problems else _ok("capabilities")


# --------------------------------------------------------------------------- convergence through the runner


def check_convergence(spec: OptimizerSpec, reg=None, *, task: str = "pi", steps: int | None = None,
                      factor: float = CONVERGENCE_FACTOR) -> list[CheckResult]:
    """Through the real runner: some lr of the spec's grid cuts the loss by ``factor`` on ``task``."""
    from optbench.gridspec import GridBlock, GridSpec, expand
    from optbench.runner import run_one

    name = f"converge-{task}"
    if task in spec.unsupported:
        return _skip(name, f"the spec marks {task!r} unsupported: {spec.unsupported[task]}")
    reg = _registry_with(spec, reg)
    if task not in reg.tasks:
        return _skip(name, f"task {task!r} is not available (blocked with -p no:...?)")
    lrs = list(spec.grid.get("lr", [])) or ([spec.defaults["lr"]] if "lr" in spec.defaults else [])
    block = GridBlock(tasks=[task], optimizers=[spec.name], steps=steps,
                      hparams={spec.name: {"lr": lrs}} if lrs else {})
    try:
        configs = expand(GridSpec([block]), reg)
    except OptbenchError as exc:
        return _fail(name, str(exc))
    tried = []  # (summary, first loss) per lr
    for rc in configs:
        result = run_one(rc, reg, key="conformance")
        losses = result["records"].get("loss") or [float("nan")]
        tried.append((result["summary"], losses[0]))
    budget = configs[0].steps
    good = [s for s, first in tried if s["status"] == "ok" and s["final_loss"] <= factor * first]
    label = ", ".join(f"{x:g}" for x in lrs) if lrs else "the factory's default"
    if good:
        best = min(good, key=lambda s: s["final_loss"])
        return _ok(name, f"lr={best['lr']:g}: final loss {best['final_loss']:.3g} in {budget} steps")
    lines = []
    for s, first in tried:
        lr = f"lr={s['lr']:g}" if s["lr"] == s["lr"] else "default lr"
        if s["status"] == "ok":
            lines.append(f"{lr}: {first:.3g} -> {s['final_loss']:.3g}")
        else:
            lines.append(f"{lr}: {s['status']} ({s['reason']})")
    return _fail(name, f"expected the final loss to fall below {factor:g} x the first loss within {budget} steps "
                       f"for some lr in [{label}]; got {'; '.join(lines)}. Hint: give the spec a grid "
                       f"{{'lr': [...]}} that spans this optimizer's working range, and check the sign of the "
                       f"update")


def _registry_with(spec: OptimizerSpec, reg):
    """``reg`` (or the installed plugins) with ``spec`` in it, for specs that are not installed."""
    from optbench import registry

    reg = reg if reg is not None else registry.load_cached(((), (), True))
    if reg.optimizers.get(spec.name) is spec:
        return reg
    module = getattr(spec.factory, "__module__", None) or "optbench"
    origin = registry.Origin(spec.name, module, "local", "unregistered")
    return dataclasses.replace(reg, optimizers={**reg.optimizers, spec.name: spec},
                               origins={**reg.origins, ("optimizer", spec.name): origin})


# --------------------------------------------------------------------------- running the kit

#: check name -> function, in the order they run; later ones assume "spec" and "build" passed
CHECKS: dict[str, Callable[..., list[CheckResult]]] = {
    "spec": check_spec,
    "build": check_build,
    "param-groups": check_param_groups,
    "none-grads": check_none_grads,
    "zero-grads": check_zero_grads,
    "state-dict": check_state_dict,
    "determinism": check_determinism,
    "capabilities": check_capabilities,
    **{f"converge-{t}": partial(check_convergence, task=t) for t in CONVERGENCE_TASKS},
}
_PREREQUISITES = ("spec", "build")


def resolve(target, reg=None) -> tuple[OptimizerSpec, Any]:
    """``target`` is an optimizer name (looked up in ``reg``) or an OptimizerSpec."""
    from optbench import registry

    if reg is None:
        reg = registry.load_cached(((), (), True))
    if isinstance(target, str):
        if target not in reg.optimizers:
            raise unknown("optimizer", target, reg.optimizers)
        return reg.optimizers[target], reg
    return target, reg


def run_checks(target, reg=None, *, only: Sequence[str] | None = None, steps: int | None = None,
               factor: float = CONVERGENCE_FACTOR) -> list[CheckResult]:
    """Run the kit (or the checks named in ``only``) on one optimizer.

    Every check needs the spec to be well formed and the optimizer to build:
    when one of those fails, it is reported (asked for or not) and the
    remaining checks are reported as skipped rather than failing with the same
    error again.
    """
    spec, reg = resolve(target, reg)
    names = list(CHECKS) if only is None else list(only)
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise OptbenchError(f"unknown check {bad[0]!r}; the checks are: {', '.join(CHECKS)}")
    if any(n not in _PREREQUISITES for n in names):
        needed = _PREREQUISITES
    else:
        needed = _PREREQUISITES[: max((_PREREQUISITES.index(n) + 1 for n in names), default=0)]
    with warnings.catch_warnings():
        # torch's advice to create_graph users; the harness and the kit already reset
        # grads to None every step, which is the fix it asks for
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
        return _run(spec, reg, names, needed, steps, factor)


def _run(spec, reg, names, needed, steps, factor) -> list[CheckResult]:
    results: list[CheckResult] = []
    blocked = None
    for n in needed:
        got = CHECKS[n](spec, reg)
        failed = any(r.failed for r in got)
        if n in names or failed:
            results += got
        if failed:
            blocked = n
            break
    for n in names:
        if n in _PREREQUISITES:
            if blocked and n not in {r.name for r in results}:
                results += _skip(n, f"needs the {blocked!r} check to pass first")
            continue
        if blocked:
            results += _skip(n, f"needs the {blocked!r} check to pass first")
            continue
        kwargs = {"steps": steps, "factor": factor} if n.startswith("converge-") else {}
        try:
            results += CHECKS[n](spec, reg, **kwargs)
        except Exception as exc:  # a check must report, never crash the kit
            results += _fail(n, f"the check itself crashed: {_explain_error(exc, spec)}")
    return results


def format_results(label: str, results: list[CheckResult]) -> str:
    """The report ``optbench check`` prints: one line per check, with its explanation."""
    return "\n".join([label] + [f"  {r}" for r in results])
