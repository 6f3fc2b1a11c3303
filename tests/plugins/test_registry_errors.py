"""Broken plugins are reported in one line that names where they come from and the fix,
and never take the working plugins down with them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import optbench
from optbench import cli, registry

GOOD = """
import torch, optbench

@optbench.hookimpl
def optbench_optimizers():
    return [optbench.OptimizerSpec("good-sgd", torch.optim.SGD, {"lr": 0.1})]
"""


def write(folder, name, source):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def load_dir(folder, **kw):
    return registry.load(plugin_dirs=[str(folder)], entry_points=False, **kw)


def only_problem(reg) -> str:
    assert len(reg.problems) == 1, reg.problems
    line = reg.problems[0]
    assert "\n" not in line
    return line


def test_missing_dependency_names_the_module_and_the_others_keep_working(tmp_path):
    d = write(tmp_path / "p", "good", GOOD)
    write(d, "needs_dep", "import optbench_no_such_dependency\n")
    reg = load_dir(d)
    line = only_problem(reg)
    assert line.startswith("plugin 'needs_dep' (local ")
    assert "needs 'optbench_no_such_dependency', which is not installed" in line
    assert "`-p no:needs_dep`" in line
    assert "good-sgd" in reg.optimizers


def test_syntax_error_says_where(tmp_path):
    d = write(tmp_path / "p", "good", GOOD)
    write(d, "typo", "def optbench_optimizers(:\n")
    reg = load_dir(d)
    line = only_problem(reg)
    assert "failed to import: SyntaxError" in line and "(at typo.py:1)" in line
    assert "good-sgd" in reg.optimizers
    assert "optbench_local_typo" not in sys.modules  # no half-executed module left behind


def test_unknown_module_given_to_dash_p():
    reg = registry.load(["optbench_no_such_plugin"], entry_points=False)
    line = only_problem(reg)
    assert "no module named 'optbench_no_such_plugin' on sys.path" in line


@pytest.mark.parametrize("returned, got", [
    ('"adam"', "str"),
    ('{"x": optbench.OptimizerSpec("x", torch.optim.SGD, {"lr": 0.1})}', "dict"),
    ('[optbench.TaskSpec("t", lambda **kw: None)]', "TaskSpec"),
])
def test_wrong_return_type(tmp_path, returned, got):
    d = write(tmp_path / "p", "good", GOOD)
    write(d, "wrong", f"""
        import torch, optbench

        @optbench.hookimpl
        def optbench_optimizers():
            return {returned}
    """)
    reg = load_dir(d)
    line = only_problem(reg)
    assert line.startswith("plugin 'wrong' (local ")
    assert f"optbench_optimizers() returned {got}, expected a list of optbench.OptimizerSpec" in line
    assert "good-sgd" in reg.optimizers


def test_hook_that_raises(tmp_path):
    d = write(tmp_path / "p", "good", GOOD)
    write(d, "raises", """
        import optbench

        @optbench.hookimpl
        def optbench_optimizers():
            return [optbench.OptimizerSpec("x", print, capabilities={"closures"})]
    """)
    line = only_problem(load_dir(d))
    assert "optbench_optimizers() raised ValueError: optimizer 'x' declares unknown capabilities ['closures']" in line


def test_name_clash_between_plugins_keeps_the_first_and_names_both(tmp_path):
    d = write(tmp_path / "p", "a_first", GOOD)
    write(d, "b_second", GOOD.replace("0.1", "0.5"))
    reg = load_dir(d)
    line = only_problem(reg)
    assert line.startswith("optimizer 'good-sgd' from local ")
    assert "(b_second) clashes with the one from local" in line and "(a_first)" in line
    assert "rename yours, or skip it with `-p no:b_second`" in line
    assert reg.optimizers["good-sgd"].defaults == {"lr": 0.1}
    assert reg.origin("optimizer", "good-sgd").plugin == "a_first"


def test_a_third_party_cannot_take_a_builtin_name(tmp_path):
    # "a..." sorts before every built-in entry point: load order must not decide who wins
    d = write(tmp_path / "p", "aaa_takes_adam", GOOD.replace('"good-sgd"', '"adam"'))
    reg = registry.load(plugin_dirs=[str(d)])
    assert reg.origin("optimizer", "adam").dist == "optbench"
    assert any("optimizer 'adam' from local" in p and "clashes with the one from optbench" in p
               for p in reg.problems)


def test_plugin_name_taken_by_an_installed_plugin(tmp_path):
    d = write(tmp_path / "p", "optimizers", GOOD)  # the built-ins' entry-point name
    reg = registry.load(plugin_dirs=[str(d)])
    taken = f"already taken by optbench {optbench.__version__}"
    assert any(p.startswith("plugin name 'optimizers' of local ") and taken in p for p in reg.problems), reg.problems
    assert "good-sgd" not in reg.optimizers and "adam" in reg.optimizers


def test_misspelt_hook_is_reported_not_silently_ignored(tmp_path):
    d = write(tmp_path / "p", "misspelt", """
        import torch, optbench

        @optbench.hookimpl
        def optbench_optimizer():
            return [optbench.OptimizerSpec("x", torch.optim.SGD, {"lr": 0.1})]
    """)
    line = only_problem(load_dir(d))
    assert "defines optbench_optimizer(), which is not an optbench hook (did you mean 'optbench_optimizers'?)" in line


def test_invalid_hook_signature_leaves_no_half_registered_plugin(tmp_path):
    # pluggy registers hooks in name order and stops at the bad one: the observer
    # registered before it must be removed again, or it would see every run
    d = write(tmp_path / "p", "badsig", """
        import optbench

        @optbench.hookimpl
        def optbench_run_finished(summary):
            raise AssertionError("a rejected plugin must not be called")

        @optbench.hookimpl
        def optbench_tasks(config):
            return []
    """)
    reg = load_dir(d)
    line = only_problem(reg)
    assert "has an invalid hook" in line and "config" in line and "optbench.hookspecs" in line
    assert not reg.pm.has_plugin("badsig")
    reg.pm.hook.optbench_run_finished(summary={})


def test_bad_spec_name_is_left_out(tmp_path):
    d = write(tmp_path / "p", "commas", GOOD.replace('"good-sgd"', '"sgd,fast"'))
    line = only_problem(load_dir(d))
    assert "left out a optimizer because its name 'sgd,fast' contains a comma or whitespace" in line


def test_blocking_by_distribution_name_is_normalised(tmp_path):
    reg = registry.load(["no:OPTBENCH"])  # the built-ins' own distribution, spelt differently
    assert "adam" not in reg.optimizers and reg.problems == []


def test_list_shows_origins_and_one_line_warnings(tmp_path, capsys):
    d = write(tmp_path / "p", "good", GOOD)
    write(d, "needs_dep", "import optbench_no_such_dependency\n")
    assert cli.main(["list", "--plugin-dir", str(d)]) == 0
    out, err = capsys.readouterr()
    assert f"from local {d} (optbench_local_good)" in out
    assert f"from optbench {optbench.__version__} (optbench_plugins.optimizers)" in out
    warnings = [line for line in err.splitlines() if line.startswith("optbench: warning:")]
    assert len(warnings) == 1 and "needs_dep" in warnings[0]


# --- a real broken distribution: metadata, entry point and a declared requirement that is missing


@pytest.fixture(scope="module")
def broken_dist(tmp_path_factory):
    """A tiny package installed into a private folder (not the shared environment, where other
    test runs would see its warning) and put on sys.path, as pip would for a real install."""
    src = tmp_path_factory.mktemp("broken-src")
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "optbench-broken-example"
        version = "0.3.1"
        dependencies = ["optbench", "optbench-missing-dependency>=2.0"]

        [project.entry-points.optbench]
        broken = "optbench_broken_example"

        [tool.setuptools]
        py-modules = ["optbench_broken_example"]
    """))
    (src / "optbench_broken_example.py").write_text("import optbench_missing_dependency\n")
    target = tmp_path_factory.mktemp("broken-site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target


def test_distribution_with_missing_requirement(broken_dist, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_dist))
    reg = registry.load()
    assert reg.problems == [
        "plugin 'broken' (optbench-broken-example 0.3.1) needs 'optbench_missing_dependency', which is not "
        "installed; `pip install 'optbench-missing-dependency>=2.0'`, or skip the plugin with "
        "`-p no:optbench-broken-example`"
    ]
    assert "adam" in reg.optimizers  # everything else still loads
    assert registry.load(["no:optbench_broken_example"]).problems == []
