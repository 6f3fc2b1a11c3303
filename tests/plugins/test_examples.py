"""The example plugin packages: one is pip-installed and used through the CLI like any
third-party plugin, and every example optimizer passes the conformance kit.

Needs the wrapped PyPI packages installed (CI installs them): lion-pytorch,
schedulefree, prodigyopt, pytorch-optimizer.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from optbench import cli, registry
from optbench.conformance import run_checks

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLUGIN_MODULES = {
    "lion": "optbench_lion",
    "schedulefree": "optbench_schedulefree",
    "prodigy": "optbench_prodigy",
    "pytorch-optimizer": "optbench_pytorch_optimizer",
}


def pip(*args):
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def installed(dist: str) -> bool:
    importlib.invalidate_caches()
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def lion_installed(tmp_path_factory):
    """examples/lion pip-installed into this environment, and uninstalled afterwards.

    Built from a copy so that the build leaves nothing in the repository.
    ``--no-deps``: lion-pytorch comes from the environment, as CI installs it.
    """
    src = tmp_path_factory.mktemp("lion-src") / "lion"
    shutil.copytree(EXAMPLES / "lion", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(src))
    importlib.invalidate_caches()
    yield src
    if installed("optbench-lion"):  # a concurrent test run may have removed it already
        pip("uninstall", "--yes", "--quiet", "optbench-lion")
        importlib.invalidate_caches()


def test_installed_example_runs_in_a_grid(lion_installed, tmp_path, capsys):
    code = cli.main(["grid", "--tasks", "pi,l2-bowl", "--optimizers", "lion,sgd", "--set", "lion.lr=0.01,0.1",
                     "--set", "sgd.lr=0.1", "--steps", "60", "--out", str(tmp_path), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "6 runs (6 ran, 0 reused): 6 ok" in out
    assert "warning" not in err

    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["plugins"]["optimizer"]["lion"]["dist"] == "optbench-lion"
    assert meta["plugins"]["optimizer"]["lion"]["version"] == "0.1.0"
    import pandas as pd

    lion = pd.read_csv(tmp_path / "summary.csv").query("optimizer == 'lion' and task == 'pi'")
    assert len(lion) == 2 and lion["final_loss"].min() < 0.1 * math.pi ** 2

    assert cli.main(["list"]) == 0
    assert "from optbench-lion 0.1.0 (optbench_lion)" in capsys.readouterr().out


def test_installed_example_passes_its_own_conformance_suite(lion_installed):
    # what the plugin's author runs in their repository: pytest with optbench's pytest plugin
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "optbench.testing", "-p", "no:cacheprovider", "-q",
                           "tests"], cwd=lion_installed, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10 passed" in proc.stdout


def test_a_local_plugin_cannot_take_an_installed_plugins_name(lion_installed, tmp_path):
    (tmp_path / "mylion.py").write_text(
        "import torch, optbench\n\n"
        "@optbench.hookimpl\n"
        "def optbench_optimizers():\n"
        "    return [optbench.OptimizerSpec('lion', torch.optim.SGD, {'lr': 0.1})]\n")
    reg = registry.load(plugin_dirs=[str(tmp_path)])
    assert reg.origin("optimizer", "lion").dist == "optbench-lion"
    assert [p for p in reg.problems if "'lion'" in p] == [
        f"optimizer 'lion' from local {tmp_path} (mylion) clashes with the one from optbench-lion 0.1.0 (lion); "
        f"kept that one; rename yours, or skip it with `-p no:mylion`"
    ]


@pytest.fixture(scope="module")
def examples_registry():
    """Every example plugin, imported from its folder as `optbench -p MODULE` would."""
    with pytest.MonkeyPatch.context() as mp:
        for folder in PLUGIN_MODULES:
            mp.syspath_prepend(str(EXAMPLES / folder))
        reg = registry.load(list(PLUGIN_MODULES.values()))  # entry points too: the kit needs the toy tasks
        assert reg.problems == []
        yield reg


EXAMPLE_OPTIMIZERS = ["lion", "adamw-schedulefree", "sgd-schedulefree", "prodigy", "lamb", "adabelief", "sam",
                      "adahessian"]


def test_every_example_optimizer_is_listed(examples_registry):
    reg = examples_registry
    mine = [n for n in reg.optimizers if reg.origin("optimizer", n).module in PLUGIN_MODULES.values()]
    assert sorted(mine) == sorted(EXAMPLE_OPTIMIZERS)
    assert reg.optimizers["adamw-schedulefree"].capabilities == {"train_eval", "foreach"}
    assert reg.optimizers["sam"].capabilities == {"closure"}
    assert reg.optimizers["adahessian"].capabilities == {"create_graph"}
    assert reg.optimizers["prodigy"].defaults["lr"] == 1.0


@pytest.mark.parametrize("name", EXAMPLE_OPTIMIZERS)
def test_every_example_optimizer_passes_the_kit(examples_registry, name):
    results = run_checks(name, examples_registry)
    assert not [str(r) for r in results if r.failed]
    skipped = {r.name for r in results if r.skipped}
    # Prodigy shares one step-size estimate across groups and refuses per-group learning rates
    assert skipped == ({"param-groups"} if name == "prodigy" else set())
