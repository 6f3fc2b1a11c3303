"""pytest plugin: the optbench conformance kit inside an optimizer author's own test suite.

It is registered through the ``pytest11`` entry point, so installing optbench
is enough.  Three ways to use it:

1. In a test module (shows up in your suite like any other test)::

       from optbench.testing import conformance_tests

       test_my_opt = conformance_tests("my-opt")  # installed optimizer names, or OptimizerSpec objects

2. On the command line: ``pytest --optbench-check my-opt``.
3. In your pytest configuration (``[tool.pytest.ini_options]``)::

       optbench_check = ["my-opt"]

Each optimizer and check is one test (``test_my_opt[my-opt-state-dict]``), so
``-k state-dict`` selects a check.  A failure prints the kit's plain
explanation, not a traceback.  ``--optbench-plugin MODULE`` loads a plugin
module that is importable but not installed, like ``optbench -p MODULE``.

pytest imports this module in every run of every project in an environment
that has optbench, so it imports nothing heavy (no torch, none of optbench's
machinery) until a conformance test is actually asked for.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("optbench", "optbench conformance kit")
    group.addoption("--optbench-check", action="append", default=[], metavar="NAME", dest="optbench_check",
                    help="run the optbench conformance kit on optimizer NAME (repeatable)")
    group.addoption("--optbench-plugin", action="append", default=[], metavar="MODULE", dest="optbench_plugin",
                    help="load an optbench plugin module by import name, like `optbench -p MODULE`")
    parser.addini("optbench_check", type="args", default=[],
                  help="optimizer names the optbench conformance kit checks in every run")


def conformance_tests(*targets, only=None):
    """A parametrised test function running the kit on ``targets``; assign it to a ``test_*`` name.

    ``targets`` are optimizer names (looked up among installed plugins and
    ``--optbench-plugin`` modules) or :class:`optbench.OptimizerSpec` objects.
    ``only`` limits the checks (names from ``optbench.conformance.CHECKS``).
    """
    from optbench.conformance import CHECKS

    if not targets:
        raise ValueError("conformance_tests() needs at least one optimizer name or OptimizerSpec")
    checks = list(only) if only is not None else list(CHECKS)
    cases = [pytest.param(t, c, id=f"{_label(t)}-{c}") for t in targets for c in checks]

    @pytest.mark.parametrize(("optbench_target", "optbench_check_name"), cases)
    def test_optbench_conformance(optbench_target, optbench_check_name, request):
        run_check(request.config, optbench_target, optbench_check_name)

    return test_optbench_conformance


class ConformanceItem(pytest.Item):
    """One check of one optimizer, for names given by option or ini rather than in a test module."""

    def __init__(self, *, target: str, check: str, **kwargs):
        super().__init__(**kwargs)
        self.target, self.check = target, check

    def runtest(self) -> None:
        run_check(self.config, self.target, self.check)

    def reportinfo(self):
        return self.path, None, f"optbench conformance {self.name}"


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so those select among these items too
def pytest_collection_modifyitems(session, config, items) -> None:
    names = list(dict.fromkeys([*config.getoption("optbench_check"), *config.getini("optbench_check")]))
    if not names:
        return
    from optbench.conformance import CHECKS

    for name in names:
        for check in CHECKS:
            item_name = f"optbench-check[{name}-{check}]"
            items.append(ConformanceItem.from_parent(session, name=item_name, nodeid=item_name,
                                                     target=name, check=check))


def run_check(config, target, check: str) -> None:
    """Run one check; fail the test with the kit's explanation, or skip it when it does not apply."""
    from optbench import registry
    from optbench.conformance import CHECKS, run_checks
    from optbench.errors import OptbenchError

    reg = registry.load_cached((tuple(config.getoption("optbench_plugin")), (), True))
    problem = None
    try:
        results = run_checks(target, reg, only=[check])
    except OptbenchError as exc:  # an unknown name (failing in here would print two chained tracebacks)
        problem = str(exc)
    if problem is not None:
        # Fail once, on the first check, and say why: an unknown name is most often
        # a plugin that failed to load.
        if check != next(iter(CHECKS)):
            pytest.skip(f"{_label(target)}: {problem}")
        pytest.fail("\n".join([problem, *reg.problems]), pytrace=False)
    mine = [r for r in results if r.name == check]
    failed = [r for r in mine if r.failed]
    if failed:
        pytest.fail("\n".join(f"{_label(target)} failed {r.name}: {r.explanation}" for r in failed), pytrace=False)
    if mine and all(r.skipped for r in mine):
        pytest.skip(f"{_label(target)} {check}: {mine[0].explanation}")


def _label(target) -> str:
    return target if isinstance(target, str) else getattr(target, "name", repr(target))
