"""The plugin manager: built-in plugins and the ``brainsynth`` entry-point group.

Built-in components ship as entry points of the ``brainsynth`` distribution itself, so they are
found and registered exactly like a third-party package. ``BRAINSYNTH_LOAD_PLUGINS`` (a comma
separated list of entry-point names) restricts loading to the named plugins, so a test or a
debugging session can run with exactly the plugins it names.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import sys
from functools import lru_cache

import pluggy

from . import hookspecs
from .errors import BrainsynthError, RegistryError
from .registry import Registry
from .schema import did_you_mean

ENTRY_POINT_GROUP = "brainsynth"
LOAD_PLUGINS_ENV = "BRAINSYNTH_LOAD_PLUGINS"


def _wanted() -> set[str] | None:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """Built-ins first, then third-party plugins, each in name order (stable messages)."""

    def order(ep: importlib.metadata.EntryPoint) -> tuple:
        dist = ep.dist.name if ep.dist else ""
        return (dist != "brainsynth", dist, ep.name)

    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=order)


@lru_cache(maxsize=None)
def plugin_manager() -> pluggy.PluginManager:
    """Load every plugin once per process; the provider of each is remembered for messages."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    wanted = _wanted()
    available = _entry_points()
    if wanted is not None:
        unknown = sorted(wanted - {ep.name for ep in available})
        if unknown:
            installed = ", ".join(sorted({ep.name for ep in available})) or "none"
            raise RegistryError(
                f"{LOAD_PLUGINS_ENV} names {', '.join(repr(n) for n in unknown)}, which no installed "
                f"package provides. Installed plugins: {installed}. Fix the names or unset {LOAD_PLUGINS_ENV}."
            )
    for ep in available:
        if wanted is not None and ep.name not in wanted:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party package must not look like our bug
            dist = ep.dist.name if ep.dist else "?"
            raise RegistryError(
                f"plugin '{ep.name}' from distribution '{dist}' failed to import ({exc!r}). "
                f"Reinstall or uninstall it, or set {LOAD_PLUGINS_ENV} to skip it."
            ) from exc
        name = ep.name if ep.dist is None else f"{ep.dist.name}:{ep.name}"
        if pm.is_registered(plugin):
            continue
        pm.register(plugin, name=name)
    check_hooks(pm)
    return pm


def check_hooks(pm: pluggy.PluginManager) -> None:
    """Refuse a plugin that implements a hook brainsynth does not have (``register_component``
    for ``register_components``): pluggy's `check_pending` finds it, this says it in one line."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        known = sorted(name for name, caller in vars(pm.hook).items() if caller.has_spec())
        unknown = sorted(
            name for name, caller in vars(pm.hook).items()
            if not caller.has_spec() and any(impl.plugin is exc.plugin for impl in caller.get_hookimpls())
        )
        name = unknown[0] if unknown else "?"
        raise RegistryError(
            f"plugin {provider_name(pm, exc.plugin)} implements a hook brainsynth does not have: "
            f"'{name}'.{did_you_mean(name, known)} Hooks: {', '.join(known)}."
        ) from None


def package_of(plugin: object) -> str | None:
    """The package a plugin's lazily named factories (``.module:Name``) are imported from."""
    if inspect.ismodule(plugin):
        return plugin.__name__ if hasattr(plugin, "__path__") else plugin.__package__
    module = sys.modules.get(getattr(plugin, "__module__", "") or "")
    if module is None:
        return None
    return module.__name__ if hasattr(module, "__path__") else module.__package__


def provider_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """``distribution (entry point)`` for messages and ``brainsynth plugins``."""
    name = pm.get_name(plugin) or repr(plugin)
    dist, _, entry = name.partition(":")
    return f"{dist} ({entry})" if entry else name


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """A registry filled by every plugin of `pm`, each registration tagged with its provider."""
    reg = Registry()
    for impl in reversed(pm.hook.register_components.get_hookimpls()):
        before = {(c.kind, c.name) for c in reg} if tracing() else set()
        impl.function(registry=reg.for_provider(provider_name(pm, impl.plugin), package_of(impl.plugin)))
        if tracing():
            added = sorted(f"{c.kind} {c.name}" for c in reg if (c.kind, c.name) not in before)
            print(f"plugins: {provider_name(pm, impl.plugin)} registered {', '.join(added) or 'nothing'}", flush=True)
    return reg


@lru_cache(maxsize=None)
def registry() -> Registry:
    """The process-wide registry, filled by every loaded plugin's ``register_components``."""
    return build_registry(plugin_manager())


def register_commands(cli) -> None:
    """Let every plugin add its click commands to the ``brainsynth`` group."""
    plugin_manager().hook.register_commands(cli=cli)


TRACE_PLUGINS_ENV = "BRAINSYNTH_TRACE_PLUGINS"
"""Set (to anything but empty or 0) to print which plugin registered each component and handled
each lifecycle hook."""


def tracing() -> bool:
    return os.environ.get(TRACE_PLUGINS_ENV, "") not in ("", "0")


_traced: set[tuple[str, str]] = set()


def notify(hook: str, **arguments) -> None:
    """Call lifecycle `hook` of every plugin that implements it; an exception becomes one line
    naming the plugin and the hook. With ``BRAINSYNTH_TRACE_PLUGINS`` the first call of each
    (hook, plugin) is printed."""
    pm = plugin_manager()
    for impl in pm.hook.__dict__[hook].get_hookimpls():
        provider = provider_name(pm, impl.plugin)
        if tracing() and (hook, provider) not in _traced:
            _traced.add((hook, provider))
            print(f"plugins: {hook} handled by {provider}", flush=True)
        try:
            impl.function(**{name: arguments[name] for name in impl.argnames})
        except BrainsynthError:
            raise
        except Exception as exc:
            raise RegistryError(f"plugin {provider} failed in its {hook} hook: {type(exc).__name__}: {exc}") from exc


def reset() -> None:
    """Forget loaded plugins (tests that install or filter plugins call this)."""
    plugin_manager.cache_clear()
    registry.cache_clear()
