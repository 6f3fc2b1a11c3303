"""What this machine can do: its name and its measured fp32 matmul peak.

The speed table reports each run's FLOP/s as a fraction of the *measured*
matmul peak rather than a datasheet number: on a shared or virtual CPU the
datasheet peak (cores x clock x SIMD width) is rarely reachable, and which
turbo clock or AVX frequency offset applies is unknowable from inside a VM.
What a large ``torch.mm`` achieves is the ceiling a training step can hope for.

Measuring takes about a second, so the result is cached as JSON in the cache
directory, keyed by everything that changes it: host, processor, thread
count, torch version, device and dtype.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import torch

#: square matmul sizes tried; the best of them is the peak.  Small enough to
#: stay in the last-level cache on a CPU, large enough to amortise the call.
CPU_SIZES = (512, 1024, 2048)
GPU_SIZES = (4096, 8192)
#: seconds of matmuls per timed trial, and trials per size (best is kept:
#: on a shared machine every disturbance makes a trial slower, never faster)
TRIAL_SECONDS = 0.05
TRIALS = 7
#: a measurement is cached only if its best trial had at least this share of
#: the CPU time its threads could have used (see ``measure_matmul_flops``)
MIN_CPU_SHARE = 0.9
#: after a measurement under load, seconds before this process measures again
RETRY_SECONDS = 300.0

#: key -> (best FLOP/s measured under load, when): lower bounds not worth a file
_loaded: dict[str, tuple[float, float]] = {}


def cache_dir() -> Path:
    """``$OPTBENCH_CACHE`` or ``~/.cache/optbench``."""
    return Path(os.environ.get("OPTBENCH_CACHE") or Path.home() / ".cache" / "optbench")


def cpu_name() -> str:
    """The processor's marketing name ("AMD EPYC 9R14", "Apple M2"...), best effort."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model", "Hardware")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2, check=False
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _cache_key(device: torch.device, dtype: torch.dtype) -> str:
    parts = [socket.gethostname(), device_name(device), device.type, str(dtype), f"torch {torch.__version__}"]
    if device.type == "cpu":
        parts.append(f"{torch.get_num_threads()} threads")
    elif device.type == "cuda":
        # TF32 changes what an fp32 matmul is allowed to do, hence its speed
        parts.append(f"tf32={torch.backends.cuda.matmul.allow_tf32}")
    return " | ".join(parts)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_flops(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[float, float]:
    """Best FLOP/s of square ``torch.mm`` over a few sizes and trials, and how
    much of the CPU that best trial had (no cache).

    The second number is CPU seconds over wall seconds x threads for the best
    trial: near 1 when this process had its cores to itself, lower when other
    processes took turns on them (then the FLOP/s say more about the load than
    about the machine).  Always 1.0 on a GPU.
    """
    device = torch.device(device)
    sizes = GPU_SIZES if device.type == "cuda" else CPU_SIZES
    threads = torch.get_num_threads()
    best, share = 0.0, 1.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        flop = 2.0 * n**3
        torch.mm(a, b, out=c)  # warm-up: thread pool start, kernel choice, page faults
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        _sync(device)
        reps = max(1, int(TRIAL_SECONDS / max(time.perf_counter() - t0, 1e-6)))
        for _ in range(TRIALS):
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            _sync(device)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if flop * reps / wall > best:
                best = flop * reps / wall
                share = 1.0 if device.type == "cuda" else min(1.0, cpu / (wall * threads))
    return best, share


def matmul_peak_flops(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, refresh: bool = False
) -> float:
    """This machine's measured matmul peak in FLOP/s, cached on disk after the first call.

    Only a measurement taken with the cores to ourselves is written to the
    cache; one taken under load is a lower bound, kept in this process for
    ``RETRY_SECONDS`` and then measured again.  ``refresh`` measures again and
    overwrites the cached value.  Call it once in the
    driving process before parallel workers start, or the workers measure
    while competing with each other's runs.
    """
    device = torch.device(device)
    key = _cache_key(device, dtype)
    path = cache_dir() / "hardware.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not refresh and isinstance(table.get(key), dict) and table[key].get("flops", 0) > 0:
        return float(table[key]["flops"])

    memo = _loaded.get(key)
    if not refresh and memo and time.monotonic() - memo[1] < RETRY_SECONDS:
        return memo[0]
    flops, share = measure_matmul_flops(device, dtype)
    if share < MIN_CPU_SHARE:
        # Other processes held the cores: the number is a lower bound.  Keep
        # the best such bound in this process for a while, but do not cache
        # it on disk, so that a quieter moment measures again.
        best = max(flops, memo[0] if memo else 0.0)
        _loaded[key] = (best, time.monotonic())
        return best
    _loaded.pop(key, None)
    table[key] = {"flops": flops, "cpu_share": round(share, 3), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs a re-measure next time, nothing worse
    return flops
