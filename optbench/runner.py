"""One run: build the task, optimizer and schedule, train, record, summarise.

``run_one`` is a pure function of a :class:`RunConfig` and the registry, so
any executor (in-process, worker processes, Dask) gives the same curves for
the same seed.  The step loop is written for a small fixed cost: on the pi
task one optimizer step is ~30-100 us of framework time, and the records we
keep must not double it.
"""

from __future__ import annotations

import math
import os
import random
import struct
import time
import traceback
from collections import defaultdict

import torch

from optbench.errors import OptbenchError
from optbench.gridspec import RunConfig, accum_steps, canonical_json
from optbench.malloc import release_free_memory
from optbench.schema import SCHEMA_VERSION

_SMALL = 64  # parameters up to this many elements: Python arithmetic beats foreach kernels


class Diverged(Exception):
    pass


class TimedOut(Exception):
    pass


def run_key(rc: RunConfig, reg) -> str:
    """Content hash of everything that decides a run's result (the cache key)."""
    import hashlib

    o = reg.origin("optimizer", rc.optimizer)
    t = reg.origin("task", rc.task)
    s = reg.origin("scheduler", rc.scheduler)
    blob = canonical_json({
        "run": rc.as_dict() | {"overrides": None, "timeout": None},
        "task": [reg.tasks[rc.task].version, t.dist, t.version, reg.source_hash("task", rc.task)],
        "optimizer": [reg.optimizers[rc.optimizer].version, o.dist, o.version,
                      reg.source_hash("optimizer", rc.optimizer)],
        "scheduler": [reg.schedulers[rc.scheduler].version, s.dist, s.version,
                      reg.source_hash("scheduler", rc.scheduler)],
        "torch": torch.__version__,
        "engine": _engine_hash(),
    })
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _engine_hash(_memo=[]) -> str:  # noqa: B006 - per-process memo
    """Hash of this file: a change to the training loop invalidates every cached run."""
    if not _memo:
        import hashlib

        with open(__file__, "rb") as f:
            _memo.append(hashlib.sha256(f.read()).hexdigest()[:12])
    return _memo[0]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _seed_everything(seed: int, device: str = "cpu") -> None:
    random.seed(seed)
    if device == "cpu":
        # torch.manual_seed also queues lazy seeds for CUDA, XPU and MTIA, each with a
        # traceback.format_stack() (~1 ms a run); a CPU run only draws from this generator.
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32, as a float32 tensor op would store it."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


_EPS32 = _f32(1e-6)


def _flat(g: torch.Tensor) -> list:
    return g.tolist() if g.dim() == 1 else g.reshape(-1).tolist()


def grad_norm(params: list[torch.Tensor], small: bool) -> float:
    """Global L2 norm of the gradients (the norm ``clip_grad_norm_`` clips by).

    ``small``: in Python on ``tolist()`` (~0.6 us for a few elements against
    ~5 us for the torch kernels; exact in float64).  Otherwise with torch's
    kernels, bit for bit the value ``clip_grad_norm_`` returns.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if small:
        hypot = math.hypot
        if len(grads) == 1:
            return hypot(*_flat(grads[0]))
        return hypot(*[hypot(*_flat(g)) for g in grads])
    with torch.no_grad():  # create_graph gradients carry a graph; the norm needs none
        return _total_norm(grads).item()


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The total norm exactly as ``clip_grad_norm_`` computes it, without its grouping cost."""
    if _uniform_dtype(grads) is not None:
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).to(grads[0].device) for g in grads]))


def _uniform_dtype(grads: list[torch.Tensor]):
    """float32 or float64 when every gradient has that dtype and the first one's device, else None."""
    g0 = grads[0]
    dtype, device = g0.dtype, g0.device
    if dtype not in (torch.float32, torch.float64):
        return None
    for g in grads:
        if g.dtype != dtype or g.device != device:
            return None
    return dtype


def clip_coef(norm: float, max_norm: float, dtype=torch.float32) -> float:
    """``clamp(max_norm / (norm + 1e-6), max=1)`` rounded as torch rounds it in ``dtype``.

    ``clip_grad_norm_`` computes this on a 0-dim tensor of the gradients' dtype:
    ``x + 1e-6``, then ``reciprocal(x) * max_norm`` (that is ``Tensor.__rtruediv__``),
    each result rounded to float32 for float32 gradients.  Each line below is one
    correctly rounded operation, so the coefficient is the same float32 number.
    """
    if dtype == torch.float32:
        c = _f32(_f32(1.0 / _f32(norm + _EPS32)) * _f32(max_norm))
    else:  # float64: Python floats are float64
        c = (1.0 / (norm + 1e-6)) * max_norm
    return 1.0 if c > 1.0 else c  # NaN stays NaN, as in torch.clamp


def clip_(params: list[torch.Tensor], norm: float, max_norm: float) -> None:
    """Scale gradients in place exactly as ``torch.nn.utils.clip_grad_norm_(params, max_norm)``.

    ``norm`` is the total norm as ``clip_grad_norm_`` computes it (``grad_norm(params,
    small=False)``).  Bit-identical results: the coefficient is rounded as torch
    rounds it, and a coefficient of exactly 1 is skipped (multiplying by 1.0
    changes no bit), which saves one kernel per tensor on unclipped steps.
    Half-precision or mixed gradients go to ``clip_grad_norm_`` itself.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    dtype = _uniform_dtype(grads)
    if dtype is None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    c = clip_coef(norm, max_norm, dtype)
    if not c == 1.0:  # NaN multiplies too, as in torch
        with torch.no_grad():
            torch._foreach_mul_(grads, c)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """``clip_grad_norm_(params, max_norm).item()``, bit for bit, at about a third of its cost."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if _uniform_dtype(grads) is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    with torch.no_grad():
        norm = _total_norm(grads).item()
    clip_(params, norm, max_norm)
    return norm


def oscillations(losses) -> int:
    """Number of times the loss curve changes direction (flat steps ignored)."""
    prev = 0.0
    count = 0
    for a, b in zip(losses, losses[1:]):
        d = b - a
        if d == 0 or d != d:
            continue
        if prev and (d > 0) != (prev > 0):
            count += 1
        prev = d
    return count


def state_bytes(opt) -> int:
    """Bytes of every tensor in ``opt.state`` (moments, step counters...)."""
    total = 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                total += v.numel() * v.element_size()
    return total


def _summary_base(rc: RunConfig, reg, key: str) -> dict:
    o = reg.origin("optimizer", rc.optimizer)
    return {
        "run_key": key, "task": rc.task, "optimizer": rc.optimizer, "hparams": rc.hparams_label,
        "scheduler": rc.scheduler, "grad_mode": rc.grad_mode, "clip": rc.clip, "seed": rc.seed,
        "lr": rc.hparams_dict.get("lr", math.nan), "task_version": reg.tasks[rc.task].version,
        "optimizer_dist": o.dist, "optimizer_version": o.version, "device": rc.device,
        "threads": torch.get_num_threads(), "config_hash": key,
    }


def run_one(rc: RunConfig, reg, key: str | None = None) -> dict:
    """Run one grid cell.  Never raises for problems of the run itself: they
    become ``status`` and ``reason`` in the returned result."""
    key = key or run_key(rc, reg)
    summary = _summary_base(rc, reg, key)
    result = {"schema": SCHEMA_VERSION, "config": rc.as_dict(), "summary": summary, "records": {},
              "traceback": None}
    tspec = reg.tasks[rc.task]
    ospec = reg.optimizers[rc.optimizer]
    skip = ospec.unsupported.get(rc.task)
    if not skip and "closure" in ospec.capabilities and rc.grad_mode == "never":
        skip = ("its step() re-computes the gradient from zero through a closure, "
                "so gradients cannot pile up (grad_mode 'never')")
    if skip:
        summary.update(status="skipped", reason=f"{rc.optimizer} cannot run {rc.task}: {skip}", steps=0)
        return result
    cuda = rc.device.startswith("cuda")
    if not cuda:
        release_free_memory()
    rss0 = _rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats(rc.device)
    _seed_everything(rc.seed, rc.device)
    rec = _Recorder()
    problem = None
    summary["opt_state_bytes"] = summary["param_bytes"] = math.nan
    try:
        problem = tspec.build(seed=rc.seed, device=rc.device, **rc.task_params_dict)
        opt = ospec.factory(problem.params, **rc.hparams_dict)
        sched = reg.schedulers[rc.scheduler].factory(opt, rc.steps, **rc.scheduler_params_dict)
        status, reason = "ok", ""
        try:
            _train(rc, tspec, ospec, problem, opt, sched, rec)
        except Diverged as exc:
            status, reason = "diverged", str(exc)
        except TimedOut as exc:
            status, reason = "timeout", str(exc)
        summary["opt_state_bytes"] = state_bytes(opt)
        summary["param_bytes"] = sum(p.numel() * p.element_size() for g in opt.param_groups for p in g["params"])
    except OptbenchError as exc:
        status, reason = "failed", str(exc)
    except Exception as exc:  # a plugin's bug ends this run only
        status = "failed"
        where = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__}: {exc} (at {os.path.basename(where.filename)}:{where.lineno})"
        result["traceback"] = traceback.format_exc()
    summary["status"] = status
    summary["reason"] = reason.splitlines()[0] if reason else ""
    peak = torch.cuda.max_memory_allocated(rc.device) if cuda else max(rec.rss_peak - rss0, 0)
    summary["peak_mem_bytes"] = peak
    result["records"] = rec.columns()
    summary.update(_summarise(rec, tspec, problem, rc))
    return result


class _Recorder:
    """Per-step columns as plain lists: appending floats is the cheapest record."""

    def __init__(self):
        self.step: list[int] = []
        self.loss: list[float] = []
        self.grad_norm: list[float] = []
        self.lr: list[float] = []
        self.step_time: list[float] = []
        self.metrics: dict[str, list] = defaultdict(list)
        self.rss_peak = 0

    def columns(self) -> dict:
        n = len(self.step)
        cols = {"step": self.step, "loss": self.loss, "grad_norm": self.grad_norm, "lr": self.lr,
                "step_time": self.step_time}
        for k, v in self.metrics.items():
            cols[k] = v + [math.nan] * (n - len(v))
        return cols


def _train(rc, tspec, ospec, problem, opt, sched, rec: _Recorder) -> None:
    """The step loop.  Per step it adds to a hand-written loop only: one grad-norm
    (Python on ``tolist()`` for small models), two clock reads, five list appends
    and the task's metrics; everything else is decided once, before the loop."""
    params = [p for g in opt.param_groups for p in g["params"]]
    small = sum(p.numel() for p in params) <= _SMALL
    n_accum = accum_steps(rc.grad_mode)
    zero = rc.grad_mode != "never"
    clip = rc.clip
    caps = ospec.capabilities
    create_graph = "create_graph" in caps
    closure_opt = "closure" in caps
    loss_fn = problem.loss
    metrics_fn = problem.metrics
    eval_every = tspec.eval_every if problem.evaluate is not None else 0
    group0 = opt.param_groups[0]
    factor = tspec.divergence_factor
    limit = math.inf
    deadline = time.perf_counter() + rc.timeout if rc.timeout else math.inf
    perf = time.perf_counter
    mode_opt = "train_eval" in caps
    if mode_opt:
        opt.train()
    for m in problem.modules:
        m.train()
    rec.rss_peak = _rss_bytes()
    zero_grad = opt.zero_grad
    opt_step = opt.step
    sched_step = sched.step if sched is not None else None
    rec_step, rec_loss, rec_gn = rec.step.append, rec.loss.append, rec.grad_norm.append
    rec_lr, rec_time = rec.lr.append, rec.step_time.append
    metric_cols = rec.metrics

    def norm_and_clip() -> float:
        """Pre-clip global gradient norm; clips in place exactly as clip_grad_norm_ would."""
        if clip > 0.0:
            return clip_grad_norm(params, clip)
        return grad_norm(params, small)

    if n_accum == 1 and not create_graph:
        def forward_backward(step):
            loss = loss_fn(step)
            loss.backward()
            return loss.item()
    else:
        def forward_backward(step):
            total = 0.0
            for micro in range(n_accum):
                loss = loss_fn(step * n_accum + micro)
                if n_accum > 1:
                    loss = loss / n_accum  # true accumulation: the step sees the mean gradient
                loss.backward(create_graph=create_graph)
                total += loss.item()
            return total

    closure = None
    for step in range(rc.steps):
        t0 = perf()
        if zero:
            zero_grad(set_to_none=True)
        lval = forward_backward(step)
        if step < 2:
            rec.rss_peak = max(rec.rss_peak, _rss_bytes())
        gn = norm_and_clip()
        lr = group0["lr"]
        if closure_opt:
            def closure(step=step):
                zero_grad(set_to_none=True)
                with torch.enable_grad():
                    total = forward_backward(step)
                if clip > 0.0:
                    clip_grad_norm(params, clip)
                return torch.tensor(total)
            opt_step(closure)
        else:
            opt_step()
        if sched_step is not None:
            sched_step()
        dt = perf() - t0
        rec_step(step)
        rec_loss(lval)
        rec_gn(gn)
        rec_lr(float(lr))
        rec_time(dt)
        if metrics_fn is not None:
            for k, v in metrics_fn().items():
                metric_cols[k].append(v)
        if step == 0:
            limit = factor * max(abs(lval), 1e-12)
        if not (lval <= limit):  # also catches NaN
            raise Diverged(f"loss {lval:.4g} at step {step} (limit {limit:.3g} = {factor:g} x first loss)")
        if eval_every and ((step + 1) % eval_every == 0 or step + 1 == rc.steps):
            _evaluate(problem, opt if mode_opt else None, step, rec)
        if t0 > deadline:
            raise TimedOut(f"still running after {rc.timeout:g} s at step {step}; raise --timeout or lower --steps")
    if not eval_every and problem.evaluate is not None:
        _evaluate(problem, opt if mode_opt else None, rc.steps - 1, rec)


def _evaluate(problem, mode_opt, step: int, rec: _Recorder) -> None:
    for m in problem.modules:
        m.eval()
    if mode_opt is not None:
        mode_opt.eval()
    with torch.no_grad():
        values = problem.evaluate()
    for m in problem.modules:
        m.train()
    if mode_opt is not None:
        mode_opt.train()
    n = len(rec.step)
    for k, v in values.items():
        col = rec.metrics[k]
        col.extend([math.nan] * (n - 1 - len(col)))
        col.append(float(v))
    rec.rss_peak = max(rec.rss_peak, _rss_bytes())


def _summarise(rec: _Recorder, tspec, problem, rc: RunConfig) -> dict:
    n = len(rec.step)
    out = {"steps": n}
    finite = [x for x in rec.loss if math.isfinite(x)]
    out["final_loss"] = rec.loss[-1] if n else math.nan
    out["best_loss"] = min(finite) if finite else math.nan
    metric = rec.loss if tspec.target_metric == "loss" else rec.metrics.get(tspec.target_metric, [])
    seen = [(i, v) for i, v in enumerate(metric) if v == v]
    out["final_target_metric"] = seen[-1][1] if seen else math.nan
    out["best_target_metric"] = min(v for _, v in seen) if seen else math.nan
    out["steps_to_target"] = math.nan
    out["time_to_target"] = math.nan
    if tspec.target_value is not None:
        for i, v in seen:
            if v <= tspec.target_value:
                out["steps_to_target"] = i + 1
                out["time_to_target"] = sum(rec.step_time[: i + 1])
                break
    out["oscillations"] = oscillations(rec.loss)
    times = sorted(rec.step_time)
    out["time_per_step"] = times[len(times) // 2] if times else math.nan
    out["total_time"] = sum(rec.step_time)
    out["tokens_per_s"] = math.nan
    out["frac_of_peak"] = math.nan
    if problem is not None and n and out["total_time"] > 0:
        micro = n * accum_steps(rc.grad_mode)
        if problem.tokens_per_micro:
            out["tokens_per_s"] = problem.tokens_per_micro * micro / out["total_time"]
        if problem.flops_per_micro:
            try:
                peak = _peak_flops(rc.device)
                out["frac_of_peak"] = problem.flops_per_micro * micro / out["total_time"] / peak
            except Exception:  # the peak is a courtesy column; never fail a run over it
                pass
    return out


_PEAKS: dict[tuple, float] = {}


def _peak_flops(device: str) -> float:
    """The measured matmul peak, at most once per process and thread count.

    ``matmul_peak_flops`` caches on disk only a measurement taken on a quiet
    machine; on a busy one it would measure again (1-2.5 s) after every run.
    """
    key = (device, torch.get_num_threads())
    if key not in _PEAKS:
        from optbench.hardware import matmul_peak_flops

        _PEAKS[key] = matmul_peak_flops(device)
    return _PEAKS[key]
