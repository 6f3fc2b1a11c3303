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
import time
import traceback
from collections import defaultdict

import torch

from optbench.errors import OptbenchError
from optbench.gridspec import RunConfig, accum_steps, canonical_json
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def grad_norm(params: list[torch.Tensor], small: bool) -> float:
    """Global L2 norm of the gradients, as ``clip_grad_norm_`` computes it."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if small:
        return math.sqrt(sum(x * x for g in grads for x in g.detach().reshape(-1).tolist()))
    norms = torch._foreach_norm([g.detach() for g in grads])
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def clip_(params: list[torch.Tensor], norm: float, max_norm: float) -> None:
    """Scale gradients in place exactly as ``torch.nn.utils.clip_grad_norm_`` would.

    It multiplies by min(1, max_norm / (norm + 1e-6)); we skip the multiply when
    that factor is 1, which leaves the same bits and saves ~60 us per step.
    """
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        torch._foreach_mul_([p.grad for p in params if p.grad is not None], coef)


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


def _state_bytes(opt) -> int:
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
    if skip:
        summary.update(status="skipped", reason=f"{rc.optimizer} cannot run {rc.task}: {skip}", steps=0)
        return result
    rss0 = _rss_bytes()
    cuda = rc.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(rc.device)
    _seed_everything(rc.seed)
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
        summary["opt_state_bytes"] = _state_bytes(opt)
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
    eval_every = tspec.eval_every
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
            opt.zero_grad(set_to_none=True)
        lval = forward_backward(step)
        if step < 2:
            rec.rss_peak = max(rec.rss_peak, _rss_bytes())
        gn = grad_norm(params, small)
        if clip > 0.0:
            clip_(params, gn, clip)
        lr = group0["lr"]
        if closure_opt:
            def closure(step=step):
                opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    total = forward_backward(step)
                if clip > 0.0:
                    clip_(params, grad_norm(params, small), clip)
                return torch.tensor(total)
        opt.step(closure) if closure_opt else opt.step()
        if sched is not None:
            sched.step()
        dt = perf() - t0
        rec.step.append(step)
        rec.loss.append(lval)
        rec.grad_norm.append(gn)
        rec.lr.append(float(lr))
        rec.step_time.append(dt)
        if metrics_fn is not None:
            for k, v in metrics_fn().items():
                rec.metrics[k].append(v)
        if step == 0:
            limit = factor * max(abs(lval), 1e-12)
        if not (lval <= limit):  # also catches NaN
            raise Diverged(f"loss {lval:.4g} at step {step} (limit {limit:.3g} = {factor:g} x first loss)")
        if eval_every and problem.evaluate is not None and ((step + 1) % eval_every == 0 or step + 1 == rc.steps):
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
                from optbench.hardware import matmul_peak_flops

                peak = matmul_peak_flops(rc.device)
                out["frac_of_peak"] = problem.flops_per_micro * micro / out["total_time"] / peak
            except Exception:  # the peak is a courtesy column; never fail a run over it
                pass
    return out
