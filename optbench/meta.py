"""Provenance: what produced a results folder, so others can trust and merge it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str = "cpu") -> dict:
    import torch

    import optbench

    env = {
        "optbench_version": optbench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "device": device,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "argv": sys.argv,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def plugin_table(reg) -> dict:
    """{kind: {name: {dist, version, module, spec_version}}} for meta.json and `optbench list`."""
    out = {}
    for kind in ("optimizer", "scheduler", "task"):
        out[kind] = {
            name: {"dist": o.dist, "version": o.version, "module": o.module, "spec_version": spec.version}
            for name, spec in reg.table(kind).items()
            for o in [reg.origin(kind, name)]
        }
    return out
