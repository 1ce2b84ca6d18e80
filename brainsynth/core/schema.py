"""Typed parameter schemas, read from a factory's signature or a dataclass, and their validation.

A recipe block such as ``{name: ema, decay: 0.99}`` is checked against the schema of the
component it names before any work starts. Errors name the recipe file, the key path and the
line (through a `Locator`) and say what to do.

A number's allowed range is declared in its annotation, ``Annotated[int, Range(ge=1)]`` (or one of
the aliases below, ``PositiveInt``), so that ``train.epochs: 0`` is refused by ``validate`` instead
of running and training nothing, and so that ``brainsynth plugins`` can show the range.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from .errors import RecipeError

Locator = Callable[[tuple], str]
"""Maps a key path such as ``("network", "depth")`` to ``"recipe.yaml:12"``."""

NestedValidator = Callable[[str, Any, tuple], dict]
"""Validates a nested ``{name: ...}`` block of a component kind (the recipe supplies it)."""


@dataclasses.dataclass(frozen=True)
class ComponentBlock:
    """Marks a parameter as a nested ``{name: ..., ...}`` block of another component kind."""

    kind: str


def component_block(kind: str) -> Any:
    """The annotation of a parameter that takes a nested component block, e.g. a codebook.

    The recipe validates the block against that component's schema like any top-level block;
    the factory receives it as a validated dict and builds it through the registry.
    """
    return Annotated[dict, ComponentBlock(kind)]


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number: ``ge``/``le`` inclusive, ``gt``/``lt`` exclusive; None leaves a side open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violated(self, value: float) -> bool:
        return (
            (self.ge is not None and not value >= self.ge)
            or (self.gt is not None and not value > self.gt)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
        )

    def describe(self) -> str:
        """``>= 1``, ``in (0, 1]``, ``> 0``: the words used in errors and in ``brainsynth plugins``."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {_number(low[1])}"
        if high:
            return f"{'<=' if high[0] == ']' else '<'} {_number(high[1])}"
        return "any number"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


PositiveInt = Annotated[int, Range(ge=1)]
"""A count that must be at least 1 (epochs, batch sizes, intervals)."""
NonNegativeInt = Annotated[int, Range(ge=0)]
"""A count where 0 means "none" or "off"."""
PositiveFloat = Annotated[float, Range(gt=0)]
"""A strictly positive number (learning rates, temperatures)."""
NonNegativeFloat = Annotated[float, Range(ge=0)]
"""A weight or a decay where 0 switches something off."""
Fraction = Annotated[float, Range(ge=0, le=1)]
"""A probability or a share, 0 to 1 inclusive."""


def ranges(annotation: Any) -> list[Range]:
    """The `Range` bounds declared on an annotation."""
    if typing.get_origin(annotation) is not Annotated:
        return []
    return [meta for meta in typing.get_args(annotation)[1:] if isinstance(meta, Range)]


def block_kind(annotation: Any) -> str | None:
    if typing.get_origin(annotation) is Annotated:
        for meta in typing.get_args(annotation)[1:]:
            if isinstance(meta, ComponentBlock):
                return meta.kind
    return None


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


def no_location(path: tuple) -> str:
    return "<recipe>"


def dotted(path: Sequence) -> str:
    return ".".join(str(p) for p in path) if path else "<top level>"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One named, typed parameter with an optional default."""

    name: str
    annotation: Any = Any
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return type_name(self.annotation)


@dataclasses.dataclass(frozen=True)
class Schema:
    """The parameters a component or recipe section accepts."""

    parameters: Mapping[str, Parameter]
    check: Callable[[dict], str | None] | None = None
    """A rule across the section's own keys (``gamma`` or ``final_lr``, not both): the resolved
    values in, None or what is wrong out. A dataclass section declares it as ``check_values``."""

    @classmethod
    def from_callable(cls, factory: Callable, exclude: Sequence[str] = ()) -> Schema:
        """Parameters of `factory` (a class's ``__init__``), minus those the engine injects; a
        ``check_values`` static method on the factory is its cross-key rule."""
        target = factory.__init__ if inspect.isclass(factory) else factory
        signature = inspect.signature(target)
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception:  # unresolvable forward references: fall back to raw annotations
            hints = {}
        params = {}
        for name, p in signature.parameters.items():
            if name in ("self", "cls") or name in exclude:
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = hints.get(name, p.annotation)
            if annotation is inspect.Parameter.empty:
                annotation = Any
            default = REQUIRED if p.default is inspect.Parameter.empty else p.default
            params[name] = Parameter(name, annotation, default)
        return cls(params, getattr(factory, "check_values", None))

    @classmethod
    def from_dataclass(cls, datacls: type) -> Schema:
        hints = typing.get_type_hints(datacls, include_extras=True)
        params = {}
        for f in dataclasses.fields(datacls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
                if dataclasses.is_dataclass(default):
                    default = dataclasses.asdict(default)
            else:
                default = REQUIRED
            params[f.name] = Parameter(f.name, hints.get(f.name, Any), default)
        return cls(params, getattr(datacls, "check_values", None))

    def validate(
        self,
        values: Mapping[str, Any] | None,
        path: tuple = (),
        locate: Locator = no_location,
        owner: str = "",
        ignore: Sequence[str] = (),
        nested: NestedValidator | None = None,
    ) -> dict:
        """Check `values` and return them coerced, with every default filled in."""
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise RecipeError(
                f"{locate(path)}: {dotted(path)}: expected a mapping of {owner or 'settings'}, "
                f"got {_describe(values)}."
            )
        for key in values:
            if key in ignore or key in self.parameters:
                continue
            raise RecipeError(
                f"{locate(path + (key,))}: {dotted(path + (key,))}: unknown key"
                f"{' for ' + owner if owner else ''}.{_did_you_mean(str(key), self.parameters)}"
                f" Known keys: {', '.join(self.parameters) or '(none)'}."
            )
        resolved = {}
        for name, param in self.parameters.items():
            if name in values:
                resolved[name] = check_type(values[name], param.annotation, path + (name,), locate, nested)
            elif param.required:
                raise RecipeError(
                    f"{locate(path)}: {dotted(path)}: missing required value '{name}' "
                    f"({param.type_name}){' for ' + owner if owner else ''}. Add '{name}:' to the "
                    f"block or pass --set {dotted(path + (name,))}=..."
                )
            elif block_kind(param.annotation) and isinstance(param.default, Mapping):
                resolved[name] = check_type(dict(param.default), param.annotation, path + (name,), locate, nested)
            else:
                resolved[name] = param.default
        if self.check is not None and (problem := self.check(resolved)):
            raise RecipeError(f"{locate(path)}: {dotted(path)}: {problem}")
        return resolved


def _did_you_mean(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def did_you_mean(key: str, known: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of `known`, or an empty string."""
    return _did_you_mean(key, known)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def type_name(annotation: Any) -> str:
    if annotation is Any:
        return "any"
    if block_kind(annotation):
        return f"{block_kind(annotation)} block"
    if typing.get_origin(annotation) is Annotated:
        bounds = " ".join(r.describe() for r in ranges(annotation))
        return type_name(typing.get_args(annotation)[0]) + (f" {bounds}" if bounds else "")
    if annotation is type(None):
        return "null"
    if dataclasses.is_dataclass(annotation):
        return "mapping"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, Sequence, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"[{', '.join(type_name(a) for a in args)}]"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return f"mapping of {type_name(args[1])}" if len(args) == 2 else "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _list_of_blocks(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is list and len(args) == 1 and block_kind(args[0]) is not None


class _OutOfRange(RecipeError):
    """A value of the right type outside its declared `Range`."""


def check_type(
    value: Any, annotation: Any, path: tuple, locate: Locator = no_location, nested: NestedValidator | None = None
) -> Any:
    """Return `value` coerced to `annotation`, or raise a RecipeError naming the key path."""

    def fail() -> typing.NoReturn:
        raise RecipeError(
            f"{locate(path)}: {dotted(path)}: expected {type_name(annotation)}, "
            f"got {_describe(value)}."
        )

    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if typing.get_origin(annotation) is Annotated:
        kind = block_kind(annotation)
        if kind is not None and nested is not None:
            return nested(kind, value, path)
        checked = check_type(value, typing.get_args(annotation)[0], path, locate, nested)
        for bounds in ranges(annotation):
            if isinstance(checked, (int, float)) and not isinstance(checked, bool) and bounds.violated(checked):
                raise _OutOfRange(f"{locate(path)}: {dotted(path)}: must be {bounds.describe()}, got {checked!r}.")
        return checked
    if annotation is type(None) or annotation is None:
        return value if value is None else fail()
    if dataclasses.is_dataclass(annotation):
        return Schema.from_dataclass(annotation).validate(value, path, locate, nested=nested)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise RecipeError(
            f"{locate(path)}: {dotted(path)}: expected one of {', '.join(repr(a) for a in args)}, "
            f"got {value!r}.{_did_you_mean(str(value), [str(a) for a in args])}"
        )
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        out_of_range = None
        for option in args:
            if option is type(None):
                continue
            if block_kind(option) and isinstance(value, Mapping):  # its own errors are the useful ones
                return check_type(value, option, path, locate, nested)
            if _list_of_blocks(option) and isinstance(value, list):  # so are each block's
                return check_type(value, option, path, locate, nested)
            try:
                return check_type(value, option, path, locate, nested)
            except _OutOfRange as exc:  # the right type, the wrong size: that is the message
                out_of_range = out_of_range or exc
            except RecipeError:
                continue
        if out_of_range is not None:
            raise out_of_range
        fail()
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(
                    f"{locate(path)}: {dotted(path)}: expected {len(args)} items "
                    f"({type_name(annotation)}), got {len(value)}."
                )
            items = [check_type(v, a, path + (i,), locate, nested) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [check_type(v, item_type, path + (i,), locate, nested) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or annotation is tuple) else items
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            fail()
        value_type = args[1] if len(args) == 2 else Any
        return {k: check_type(v, value_type, path + (k,), locate, nested) for k, v in value.items()}
    if annotation is bool:
        return value if isinstance(value, bool) else fail()
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else fail()
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail()
    if annotation is str:
        return value if isinstance(value, str) else fail()
    if isinstance(annotation, type):
        return value if isinstance(value, annotation) else fail()
    return value
