"""optbench.testing, the pytest plugin, as an optimizer author uses it: in a project of their own.

Each test runs pytest in a subprocess with entry-point autoloading off and
``-p optbench.testing``, so it behaves the same whether or not optbench's
``pytest11`` entry point is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest


def run_pytest(project, *args):
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "optbench.testing", "-p", "no:cacheprovider",
                           "-q", *args], cwd=project, capture_output=True, text=True, timeout=300, env=env)


AUTHOR_TESTS = '''
import torch
from optbench import OptimizerSpec
from optbench.testing import conformance_tests


class Forgetful(torch.optim.SGD):
    """Momentum kept outside self.state: a checkpoint loses it."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr=lr)
        self.buffers = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    buf = self.buffers.setdefault(p, torch.zeros_like(p)).mul_(0.9).add_(p.grad)
                    p.add_(buf, alpha=-group["lr"])


FORGETFUL = OptimizerSpec("forgetful", Forgetful, {"lr": 0.1}, grid={"lr": [0.01, 0.1]})

test_kit = conformance_tests("sgd", FORGETFUL, only=["spec", "state-dict", "converge-pi"])
'''


def test_an_authors_suite(tmp_path):
    """All three ways in, in one project: conformance_tests() in a test module, a name in
    the ini file (sgd), a name on the command line (a typo of momentum)."""
    (tmp_path / "test_my_optimizer.py").write_text(AUTHOR_TESTS)
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.pytest.ini_options]
        optbench_check = ["sgd"]
    """))
    proc = run_pytest(tmp_path, "--optbench-check", "momentom", "-k", "not l2-bowl", "-rA")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    # module: 6 tests, forgetful's state-dict fails; ini: sgd's 10 checks but -k drops one;
    # the typo: fails once on its spec check, its other 9 are skipped and -k drops one of those
    assert "2 failed, 14 passed, 8 skipped, 2 deselected" in out
    assert "PASSED test_my_optimizer.py::test_kit[sgd-state-dict]" in out
    assert "FAILED test_my_optimizer.py::test_kit[forgetful-state-dict]" in out
    assert "PASSED optbench-check[sgd-converge-pi]" in out
    assert "FAILED optbench-check[momentom-spec]" in out
    # the kit's explanations, not tracebacks into optbench
    assert "forgetful failed state-dict: 3 steps after loading the state_dict into a fresh optimizer" in out
    assert "unknown optimizer 'momentom' (did you mean 'momentum'?)" in out
    assert "run_check(" not in out and "Traceback" not in out


def test_unrelated_runs_are_untouched(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    # what pytest imports in every run must stay cheap: no torch, no optbench machinery
    probe = subprocess.run([sys.executable, "-c", "import sys, optbench.testing; print(sorted(sys.modules))"],
                           capture_output=True, text=True, timeout=60)
    loaded = eval(probe.stdout)
    assert "torch" not in loaded and "optbench.registry" not in loaded and "optbench.conformance" not in loaded


def test_entry_point_when_installed():
    eps = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == "optbench.testing"]
    if not eps:
        pytest.skip("optbench's pytest11 entry point is not in the installed metadata (reinstall optbench)")
    assert eps[0].load().conformance_tests
