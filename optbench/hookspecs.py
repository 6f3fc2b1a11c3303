"""The plugin contract.  These docstrings are the specification.

A plugin is any module (or object) with functions named like the hooks below,
marked ``@optbench.hookimpl``.  optbench finds plugins through the ``optbench``
entry-point group, exactly as pytest finds ``pytest11`` plugins; the built-in
optimizers, schedulers and tasks load through that same group.

Minimal third-party optimizer plugin::

    import optbench, torch

    @optbench.hookimpl
    def optbench_optimizers():
        return [optbench.OptimizerSpec("my-sgd", torch.optim.SGD, {"lr": 0.01})]

and in its ``pyproject.toml``::

    [project.entry-points.optbench]
    my_sgd = "my_sgd_plugin"
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("optbench")


@hookspec
def optbench_optimizers():
    """Return a list of :class:`optbench.OptimizerSpec`.

    Called once per process when the registry is built.  Names must be unique
    across all plugins; a clash is reported naming both distributions.
    """


@hookspec
def optbench_schedulers():
    """Return a list of :class:`optbench.SchedulerSpec`.

    The factory receives the optimizer, the run's total number of optimizer
    steps, and the scheduler's parameters.
    """


@hookspec
def optbench_tasks():
    """Return a list of :class:`optbench.TaskSpec`.

    ``build`` is called once per run, in whichever process executes the run,
    with ``seed``, ``device`` and the task's parameters as keywords.  It must
    seed everything it draws so that the same seed gives identical curves.
    """


@hookspec
def optbench_run_finished(summary):
    """Observe a finished run (called in the process that drives the grid).

    ``summary`` is the run's summary row as a dict (see ``optbench.runner``).
    Return value is ignored.  Use it for live logging or external trackers.
    """


@hookspec
def optbench_grid_finished(out_dir, summaries):
    """Observe a finished grid: ``out_dir`` holds the written tables and
    ``summaries`` is the list of run summary dicts.  Return value is ignored.
    """
