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


def git_commit(path: Path | None = None, ignore: Path | None = None) -> str | None:
    """HEAD of the git repository at ``path`` (default: the working directory),
    with ``-dirty`` appended when tracked files differ from it, so that results
    made with uncommitted code are not mistaken for that commit's.  Changes
    under ``ignore`` (the results folder being written) do not count."""
    cwd = path or Path.cwd()

    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return None
        exclude = [f":(exclude){Path(ignore).resolve()}"] if ignore is not None else []
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":/", *exclude)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(device: str = "cpu", out: Path | None = None) -> dict:
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
        "git_commit": git_commit(ignore=out),
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
