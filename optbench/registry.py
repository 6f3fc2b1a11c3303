"""Find plugins and index their specs by name.

Loading follows pytest: every entry point in the ``optbench`` group is a
plugin module; ``-p MODULE`` adds one by import name, ``--plugin-dir DIR``
imports every ``*.py`` in DIR, and ``-p no:NAME`` blocks a plugin (an entry
point name, a module name or a distribution name) before it loads.  A plugin
that fails to import, returns the wrong thing or reuses a taken name is
reported in one line that names its distribution and the fix, and is left
out; the others keep working.  optbench's own plugins load first, so a
third-party optimizer named like a built-in is the one reported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pluggy

from optbench import hookspecs
from optbench.errors import OptbenchError, did_you_mean, unknown
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
    #: every loaded plugin by its plugin name (entry-point, module or file name)
    plugin_origins: dict[str, Origin] = field(default_factory=dict)
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


def _normalise(name: str) -> str:
    """PEP 503 form, so `-p no:optbench_lion` blocks the distribution `optbench-lion`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_name(path: Path) -> str:
    return f"optbench_local_{path.stem}"


def _import_file(path: Path):
    name = _local_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a half-executed module must not be found by a later import
        raise
    return module


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _skip_hint(origin: Origin) -> str:
    # A third party is best blocked by its distribution, which covers all its entry points;
    # optbench's own plugins one by one, or `-p no:optbench` would block all of them.
    if origin.dist in ("local", "unknown") or _normalise(origin.dist) == "optbench":
        return f"`-p no:{origin.plugin}`"
    return f"`-p no:{origin.dist}`"


def _import_problem(origin: Origin, exc: BaseException) -> str:
    """One line for a plugin that failed to import, with the most likely fix."""
    who = f"plugin {origin.plugin!r} ({origin.label})"
    skip = _skip_hint(origin)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        missing = exc.name.split(".")[0]
        if missing == origin.module.split(".")[0]:
            if origin.dist == "local":
                return (f"{who}: no module named {origin.module!r} on sys.path; check the name given to -p, "
                        f"or put the file in a folder and pass --plugin-dir")
            return (f"{who}: its entry point names module {origin.module!r}, which is not installed; "
                    f"reinstall it (`pip install --force-reinstall {origin.dist}`) or uninstall it")
        req = _requirement_for(origin.dist, missing)
        fix = f"`pip install '{req}'`" if req else f"install the package that provides {missing!r}"
        return f"{who} needs {missing!r}, which is not installed; {fix}, or skip the plugin with {skip}"
    where = ""
    if exc.__traceback__ is not None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno})"
    if isinstance(exc, SyntaxError):
        where = f" (at {Path(exc.filename or '?').name}:{exc.lineno})"
    return (f"{who} failed to import: {type(exc).__name__}: {_one_line(exc)}{where}; "
            f"fix or upgrade it, or skip it with {skip}")


def _requirement_for(dist: str, module: str) -> str | None:
    """The declared requirement of ``dist`` that most likely provides ``module``."""
    if dist in ("local", "unknown"):
        return None
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
        if _normalise(name) == _normalise(module):
            return req.split(";")[0].strip()
    return None


def load(plugins: Iterable[str] = (), plugin_dirs: Iterable[str] = (), entry_points: bool = True) -> Registry:
    """Build the registry.  ``plugins`` are ``-p`` values (``MODULE`` or ``no:NAME``)."""
    plugins, plugin_dirs = tuple(plugins), tuple(plugin_dirs)
    blocked = {_normalise(p[3:]) for p in plugins if p.startswith("no:")}
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    reg = Registry(load_args=(plugins, plugin_dirs, entry_points), pm=pm)
    candidates: list[tuple[Any, Origin]] = []  # (loader, origin)

    if entry_points:
        eps = [(ep, *_dist_of(ep)) for ep in metadata.entry_points(group=GROUP)]
        # optbench's own plugins load first, so a third-party name clash is reported
        # against the third party and the built-in keeps its name.
        eps.sort(key=lambda e: (_normalise(e[1]) != "optbench", e[0].name))
        for ep, dist, version in eps:
            module = ep.value.split(":")[0].strip()
            if {_normalise(ep.name), _normalise(module), _normalise(dist)} & blocked:
                continue
            candidates.append((ep.load, Origin(ep.name, module, dist, version)))
    for p in plugins:
        if not p.startswith("no:") and _normalise(p) not in blocked:
            candidates.append((lambda p=p: importlib.import_module(p), Origin(p, p, "local", "-p")))
    for d in plugin_dirs:
        folder = Path(d)
        if not folder.is_dir():
            raise OptbenchError(f"--plugin-dir {d!r} is not a directory; pass a folder of plugin .py files")
        for path in sorted(folder.glob("*.py")):
            if _normalise(path.stem) in blocked:
                continue
            candidates.append((lambda path=path: _import_file(path),
                               Origin(path.stem, _local_name(path), "local", str(folder))))

    for loader, origin in candidates:
        name = origin.plugin
        if pm.has_plugin(name):
            other = _registered_origin(reg, name)
            reg.problems.append(
                f"plugin name {name!r} of {origin.label} is already taken by {other}; "
                f"rename one of them, or skip this one with {_skip_hint(origin)}"
            )
            continue
        try:
            module = loader()
        except Exception as exc:  # a broken third-party plugin must not take the others down
            reg.problems.append(_import_problem(origin, exc))
            continue
        if pm.is_registered(module):  # the same module under a second entry-point name
            continue
        try:
            pm.register(module, name=name)
        except Exception as exc:  # pluggy checks hook signatures against the specs
            if pm.has_plugin(name):  # pluggy leaves a half-registered plugin behind
                pm.unregister(name=name)
            reg.problems.append(
                f"plugin {name!r} ({origin.label}) has an invalid hook: {_one_line(exc)}; "
                f"match the signatures in optbench.hookspecs, or skip it with {_skip_hint(origin)}"
            )
            continue
        reg.plugin_origins[name] = origin
        _check_hook_names(reg, pm, module, origin)
        _collect(reg, module, origin)
    return reg


def _registered_origin(reg: Registry, name: str) -> str:
    o = reg.plugin_origins.get(name)
    return o.label if o else "another plugin"


_HOOK_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("optbench_"))


def _check_hook_names(reg: Registry, pm, module, origin: Origin) -> None:
    """A misspelt hook is silently never called by pluggy; say so instead."""
    for attr in dir(module):
        if attr.startswith("optbench_") and attr not in _HOOK_NAMES and pm.parse_hookimpl_opts(module, attr):
            reg.problems.append(
                f"plugin {origin.plugin!r} ({origin.label}) defines {attr}(), which is not an optbench hook"
                f"{did_you_mean(attr, _HOOK_NAMES)}; rename it (hooks: {', '.join(sorted(_HOOK_NAMES))})"
            )


def _bad_name(name) -> str | None:
    """Why ``name`` cannot be selected on the command line, or None.  Commas split
    ``--optimizers a,b`` lists; the conformance kit is stricter (see ``check_spec``)."""
    if not isinstance(name, str) or not name.strip():
        return f"its name is {name!r}, not a non-empty string"
    if "," in name or any(c.isspace() for c in name):
        return f"its name {name!r} contains a comma or whitespace"
    return None


def _collect(reg: Registry, module, origin: Origin) -> None:
    """Ask one plugin for its specs and index them, reporting clashes and bad types."""
    plugin_name = origin.plugin
    skip = _skip_hint(origin)
    for kind, (hook_name, spec_type) in _KINDS.items():
        impl = getattr(module, hook_name, None)
        if impl is None:
            continue
        who = f"plugin {plugin_name!r} ({origin.label}): {hook_name}()"
        try:
            specs = impl()
        except Exception as exc:
            reg.problems.append(f"{who} raised {type(exc).__name__}: {_one_line(exc)}; "
                                f"fix the plugin or skip it with {skip}")
            continue
        if specs is None:
            continue
        if isinstance(specs, spec_type) or not isinstance(specs, (list, tuple)):
            specs = [specs]
        table = reg.table(kind)
        for spec in specs:
            if not isinstance(spec, spec_type):
                reg.problems.append(
                    f"{who} returned {type(spec).__name__}, expected a list of optbench.{spec_type.__name__}; "
                    f"fix the plugin or skip it with {skip}"
                )
                continue
            bad = _bad_name(spec.name)
            if bad:
                reg.problems.append(f"{who}: left out a {kind} because {bad}; rename it, e.g. 'my-opt'")
                continue
            if spec.name in table:
                other = reg.origins[(kind, spec.name)]
                reg.problems.append(
                    f"{kind} {spec.name!r} from {origin.label} ({plugin_name}) clashes with the one from "
                    f"{other.label} ({other.plugin}); kept that one; rename yours, or skip it with {skip}"
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
