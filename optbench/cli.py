"""``optbench`` command line.  Each sub-command is a module in ``optbench/commands``
with ``register(subparsers)``; it sets ``func(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import optbench
from optbench.errors import OptbenchError


def _add_plugin_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plugins")
    g.add_argument("-p", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="load a plugin module by import name; `-p no:NAME` blocks an installed plugin")
    g.add_argument("--plugin-dir", dest="plugin_dirs", action="append", default=[], metavar="DIR",
                   help="load every *.py file in DIR as a plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optbench", description="Benchmark PyTorch optimizers on a grid of tasks, schedules and settings.")
    parser.add_argument("--version", action="version", version=f"optbench {optbench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import optbench.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"optbench.commands.{info.name}").register(sub)
    for p in sub.choices.values():
        _add_plugin_options(p)
    return parser


def load_registry(args, warn: bool = True):
    """The plugin registry for ``args``; broken plugins are reported, not fatal."""
    from optbench import registry

    reg = registry.load(args.plugins, args.plugin_dirs)
    if warn:
        for line in reg.problems:
            print(f"optbench: warning: {line}", file=sys.stderr)
    return reg


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OptbenchError as exc:
        print(f"optbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optbench: interrupted; finished runs are saved, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
