"""Find plugins and index their specs by name.

Loading follows pytest: every entry point in the ``optbench`` group is a
plugin module; ``-p MODULE`` adds one by import name, ``--plugin-dir DIR``
imports every ``*.py`` in DIR, and ``-p no:NAME`` blocks a plugin (an entry
point name, a module name or a distribution name) before it loads.  A plugin
that fails to import or returns the wrong thing is reported in one line and
left out; the others keep working.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pluggy

from optbench import hookspecs
from optbench.errors import OptbenchError, unknown
from optbench.specs import OptimizerSpec, SchedulerSpec, TaskSpec

GROUP = "optbench"
_KINDS = {
    "optimizer": ("optbench_optimizers", OptimizerSpec),
    "scheduler": ("optbench_schedulers", SchedulerSpec),
    "task": ("optbench_tasks", TaskSpec),
}


@dataclass(frozen=True)
class Origin:
    """Where a plugin came from, for `optbench list`, provenance and cache keys."""

    plugin: str  # entry-point name or module name
    module: str
    dist: str  # distribution name, or "local" for -p / --plugin-dir modules
    version: str

    @property
    def label(self) -> str:
        return f"{self.dist} {self.version}"


@dataclass
class Registry:
    optimizers: dict[str, OptimizerSpec] = field(default_factory=dict)
    schedulers: dict[str, SchedulerSpec] = field(default_factory=dict)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)
    #: one line per plugin that could not be loaded
    problems: list[str] = field(default_factory=list)
    #: the arguments that built this registry, so worker processes can rebuild it
    load_args: tuple = ()
    pm: Any = None

    def table(self, kind: str) -> dict[str, Any]:
        return {"optimizer": self.optimizers, "scheduler": self.schedulers, "task": self.tasks}[kind]

    def get(self, kind: str, name: str):
        table = self.table(kind)
        if name not in table:
            raise unknown(kind, name, table)
        return table[name]

    def origin(self, kind: str, name: str) -> Origin:
        return self.origins[(kind, name)]

    def source_hash(self, kind: str, name: str) -> str:
        """Hash of every source file of the package that provides ``name``.

        The whole package, not just the defining module, so that editing a
        helper the plugin imports also invalidates cached results.
        """
        return _package_hash(self.origin(kind, name).module)


def _package_hash(module_name: str, _cache: dict = {}) -> str:  # noqa: B006 - per-process memo
    top = module_name.split(".")[0]
    if top in _cache:
        return _cache[top]
    mod = sys.modules.get(top) or importlib.import_module(top)
    files: Iterable[Path]
    if getattr(mod, "__path__", None):
        files = sorted(p for d in mod.__path__ for p in Path(d).rglob("*.py"))
    elif getattr(mod, "__file__", None):
        files = [Path(mod.__file__)]
    else:
        files = []
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    _cache[top] = h.hexdigest()[:16]
    return _cache[top]


def _dist_of(ep) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "?"
    return dist.metadata["Name"], dist.version


def _import_file(path: Path):
    name = f"optbench_local_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load(plugins: Iterable[str] = (), plugin_dirs: Iterable[str] = (), entry_points: bool = True) -> Registry:
    """Build the registry.  ``plugins`` are ``-p`` values (``MODULE`` or ``no:NAME``)."""
    plugins, plugin_dirs = tuple(plugins), tuple(plugin_dirs)
    blocked = {p[3:] for p in plugins if p.startswith("no:")}
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    reg = Registry(load_args=(plugins, plugin_dirs, entry_points), pm=pm)
    candidates: list[tuple[str, Any, Origin | None]] = []  # (plugin name, loader, origin)

    if entry_points:
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            dist, version = _dist_of(ep)
            if {ep.name, ep.value.split(":")[0], dist} & blocked:
                continue
            candidates.append((ep.name, ep.load, Origin(ep.name, ep.value.split(":")[0], dist, version)))
    for p in plugins:
        if not p.startswith("no:") and p not in blocked:
            candidates.append((p, lambda p=p: importlib.import_module(p), Origin(p, p, "local", "-p")))
    for d in plugin_dirs:
        folder = Path(d)
        if not folder.is_dir():
            raise OptbenchError(f"--plugin-dir {d!r} is not a directory; pass a folder of plugin .py files")
        for path in sorted(folder.glob("*.py")):
            if path.stem in blocked:
                continue
            candidates.append((path.stem, lambda path=path: _import_file(path), None))

    for name, loader, origin in candidates:
        try:
            module = loader()
        except Exception as exc:  # a broken third-party plugin must not take the others down
            who = f"{origin.dist} {origin.version}" if origin else name
            reg.problems.append(
                f"plugin {name!r} ({who}) failed to import: {type(exc).__name__}: {exc}; "
                f"fix or upgrade it, or skip it with `-p no:{name}`"
            )
            continue
        if origin is None:
            origin = Origin(name, module.__name__, "local", str(Path(module.__file__).parent))
        if pm.is_registered(module):
            continue
        try:
            pm.register(module, name=name)
        except Exception as exc:  # pluggy validates hook names and signatures
            reg.problems.append(f"plugin {name!r} ({origin.label}) is invalid: {exc}; fix it or pass `-p no:{name}`")
            continue
        _collect(reg, pm, module, origin, name)
    return reg


def _collect(reg: Registry, pm, module, origin: Origin, plugin_name: str) -> None:
    """Ask one plugin for its specs and index them, reporting clashes and bad types."""
    for kind, (hook_name, spec_type) in _KINDS.items():
        impl = getattr(module, hook_name, None)
        if impl is None:
            continue
        try:
            specs = impl()
        except Exception as exc:
            reg.problems.append(
                f"plugin {plugin_name!r} ({origin.label}): {hook_name}() raised {type(exc).__name__}: {exc}; "
                f"fix the plugin or skip it with `-p no:{plugin_name}`"
            )
            continue
        if specs is None:
            continue
        if isinstance(specs, spec_type) or not isinstance(specs, (list, tuple)):
            specs = [specs]
        table = reg.table(kind)
        for spec in specs:
            if not isinstance(spec, spec_type):
                reg.problems.append(
                    f"plugin {plugin_name!r} ({origin.label}): {hook_name}() returned "
                    f"{type(spec).__name__}, expected a list of optbench.{spec_type.__name__}; "
                    f"fix the plugin or skip it with `-p no:{plugin_name}`"
                )
                continue
            if spec.name in table:
                other = reg.origins[(kind, spec.name)]
                reg.problems.append(
                    f"{kind} {spec.name!r} from {origin.label} ({plugin_name}) clashes with the one from "
                    f"{other.label} ({other.plugin}); kept the first, rename one or pass `-p no:{plugin_name}`"
                )
                continue
            table[spec.name] = spec
            reg.origins[(kind, spec.name)] = origin


_CACHE: dict[tuple, Registry] = {}


def load_cached(load_args: tuple) -> Registry:
    """The registry for ``load_args``, built once per process (workers reuse it)."""
    if load_args not in _CACHE:
        _CACHE[load_args] = load(*load_args)
    return _CACHE[load_args]
