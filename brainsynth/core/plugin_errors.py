"""Which plugin's component an unexpected error came from, so it can be reported in one line.

A component is built and run from many places (tasks, the loop, the sampler), so the error is
traced back instead of wrapping every call: the innermost frame of the traceback that belongs to
a registered component names it. A frame belongs to a component when it is a method of an
instance (or a class method) of a registered class, the body of a registered factory function,
or, failing both, a function of the one module that registers a single component. An error in
a plugin's hook itself (its ``register_components`` or ``register_commands``) names the plugin
and the hook. Errors that are brainsynth's own (`BrainsynthError`) are already one line and are
never blamed on a plugin.
"""

from __future__ import annotations

import inspect
import traceback
from types import CodeType, TracebackType
from typing import TYPE_CHECKING

from .errors import BrainsynthError

if TYPE_CHECKING:
    import pluggy

    from .registry import Component, Registry


def _frames(tb: TracebackType | None) -> list[TracebackType]:
    frames = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    return frames


def _code_of(factory: object) -> CodeType | None:
    function = inspect.unwrap(factory) if callable(factory) else None
    return getattr(function, "__code__", None)


def component_of(exc: BaseException, registry: Registry) -> Component | None:
    """The registered component whose code raised `exc` (innermost frame first), or None."""
    by_class: dict[type, Component] = {}
    by_code: dict[CodeType, Component] = {}
    by_module: dict[str, list[Component]] = {}
    for component in registry:
        if component.lazy:  # never imported, so never built: it cannot have raised
            continue
        factory = component.factory
        if isinstance(factory, type):
            by_class.setdefault(factory, component)
        else:
            code = _code_of(factory)
            if code is not None:
                by_code.setdefault(code, component)
        module = getattr(factory, "__module__", None)
        if module:
            by_module.setdefault(module, []).append(component)
    for tb in reversed(_frames(exc.__traceback__)):
        frame = tb.tb_frame
        owner = frame.f_locals.get("self", frame.f_locals.get("cls"))
        if owner is not None:
            for klass in owner.__mro__ if isinstance(owner, type) else type(owner).__mro__:
                if klass in by_class:
                    return by_class[klass]
        if frame.f_code in by_code:
            return by_code[frame.f_code]
        candidates = by_module.get(frame.f_globals.get("__name__", ""), [])
        if len(candidates) == 1:
            return candidates[0]
    return None


def blame(exc: BaseException, registry: Registry | None) -> str | None:
    """One line naming the plugin and the component that raised `exc`, or None when `exc` is
    brainsynth's own, not an `Exception`, or raised outside every registered component."""
    if registry is None or not isinstance(exc, Exception) or isinstance(exc, BrainsynthError):
        return None
    component = component_of(exc, registry)
    if component is None:
        return None
    return _line(f"plugin {component.provider}, {component.kind} '{component.name}'", exc)


def blame_hook(exc: BaseException, pm: pluggy.PluginManager) -> str | None:
    """One line naming the plugin whose hook implementation raised `exc` (innermost first), or None."""
    from .plugins import provider_name

    if not isinstance(exc, Exception) or isinstance(exc, BrainsynthError):
        return None
    hooks: dict[CodeType, tuple[str, str]] = {}
    for name, caller in vars(pm.hook).items():
        for impl in caller.get_hookimpls():
            code = _code_of(impl.function)
            if code is not None:
                hooks.setdefault(code, (provider_name(pm, impl.plugin), name))
    for tb in reversed(_frames(exc.__traceback__)):
        if tb.tb_frame.f_code in hooks:
            provider, hook = hooks[tb.tb_frame.f_code]
            return _line(f"plugin {provider}, in its {hook} hook", exc)
    return None


def raised(exc: BaseException) -> str:
    """``Type: first line of the message (raised in file:line, in function)``: an unexpected error, shortly."""
    lines = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (raised in {frames[-1].filename}:{frames[-1].lineno}, in {frames[-1].name})" if frames else ""
    return what + where


def _line(who: str, exc: BaseException) -> str:
    return (
        f"{who}: {raised(exc)}. This error is not one brainsynth checks for, probably a bug in that "
        f"plugin; run again with --debug for the traceback and report it to the plugin's authors."
    )
