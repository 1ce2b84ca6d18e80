"""The registry: component kind -> name -> component.

A component is a name, a factory, a typed parameter schema (from the factory's signature or a
dataclass), a one-line description and the distribution that provided it. Plugins fill the
registry through the ``register_components`` hook; recipes choose components by name only.

What each kind must be and what the engine supplies is declared in `kinds`. A plugin may name its
factory lazily, as ``".module:Class"`` inside its own package: registering then imports nothing
(``brainsynth --help`` stays fast), and the factory is imported, and checked against its kind's
contract, the first time it is used (``validate`` does that for what a recipe names,
``brainsynth plugins`` for everything).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import RecipeError, RegistryError
from .kinds import KINDS as KIND_INFO
from .kinds import Kind, canonical, factory_arguments
from .schema import Parameter, Schema, did_you_mean

KINDS: tuple[str, ...] = tuple(KIND_INFO)
"""Component kinds (see `brainsynth.core.kinds` for each one's contract)."""


def _first_line(factory: Callable) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Component:
    """A registered factory with its parameter schema, resolved and checked on first use."""

    def __init__(
        self,
        kind: str,
        name: str,
        target: Callable[..., Any] | str,
        *,
        provider: str,
        package: str | None = None,
        description: str | None = None,
        schema: type | Schema | None = None,
        injected: Sequence[str] | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.provider = provider
        self.aliases: tuple[str, ...] = ()
        self._target = target
        self._package = package
        self._description = description
        self._schema_source = schema
        self._injected = tuple(injected) if injected is not None else None
        self._factory: Callable[..., Any] | None = None
        self._schema: Schema | None = None
        if not isinstance(target, str):
            self._resolve()

    @property
    def info(self) -> Kind:
        return KIND_INFO[self.kind]

    @property
    def lazy(self) -> bool:
        """True while a lazily named factory has not been imported yet."""
        return self._factory is None

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory, imported (and checked against the kind's contract) on first access."""
        if self._factory is None:
            self._resolve()
        return self._factory

    @property
    def injected(self) -> tuple[str, ...]:
        """The engine-supplied arguments this factory takes (inferred from its signature)."""
        if self._injected is not None:
            return self._injected
        accepted = factory_arguments(self.factory)
        supplies = self.info.supplies
        return tuple(a for a in supplies if accepted is None or a in accepted)

    @property
    def schema(self) -> Schema:
        if self._schema is None:
            self._schema = self._build_schema()
        return self._schema

    @property
    def description(self) -> str:
        if self._description is None:
            self._description = _first_line(self.factory)
        return self._description

    def _resolve(self) -> None:
        target = self._target
        if isinstance(target, str):
            target = self._import(target)
        if not callable(target):
            raise RegistryError(f"{self.provider} registers {self.kind} '{self.name}' with a factory that is not callable ({target!r}).")
        missing = self.info.problems(target)
        if missing:
            raise RegistryError(
                f"{self.provider} registers {self.kind} '{self.name}' whose "
                f"{'class' if inspect.isclass(target) else 'factory'} lacks {'; '.join(missing)}. "
                f"The {self.kind} contract: {self.info.describe()}."
            )
        self._factory = target

    def _import(self, reference: str) -> Callable[..., Any]:
        """A ``.module:Name`` inside the registering plugin's own package (never another's)."""
        module_name, sep, attribute = reference.partition(":")
        if not sep or not attribute or not module_name.startswith("."):
            raise RegistryError(
                f"{self.provider} registers {self.kind} '{self.name}' as {reference!r}; a lazily named "
                f"factory is '.module:Name', a module of the plugin's own package."
            )
        if self._package is None:
            raise RegistryError(f"{self.provider} registers {self.kind} '{self.name}' lazily, but is not a package.")
        try:
            module = importlib.import_module(module_name, self._package)
            return getattr(module, attribute)
        except (ImportError, AttributeError) as exc:
            raise RegistryError(
                f"{self.provider} registers {self.kind} '{self.name}' as {reference!r}, which cannot be "
                f"imported ({type(exc).__name__}: {exc}). Reinstall the plugin, or fix its registration."
            ) from exc

    def _build_schema(self) -> Schema:
        source = self._schema_source
        if source is None:
            schema = Schema.from_callable(self.factory, exclude=self.info.supplies)
        elif isinstance(source, Schema):
            schema = source
        else:
            schema = Schema.from_dataclass(source)
        settings = self.info.settings_class()
        if settings is None:
            return schema
        shared = Schema.from_dataclass(settings)
        parameters: dict[str, Parameter] = {**schema.parameters, **shared.parameters}
        checks = [c for c in (schema.check, shared.check) if c is not None]

        def check(values: dict) -> str | None:
            return next((p for c in checks if (p := c(values))), None)

        return Schema(parameters, check if checks else None)

    def build(self, params: dict | None = None, *, registry: Registry | None = None, **injected: Any) -> Any:
        """Call the factory with validated recipe parameters plus engine-supplied values.

        Nested blocks the kind declares (a tokenizer's ``codebook``) are built first with
        `registry`, the run's own. Keys of the kind's `settings` are the engine's and not passed.
        """
        params = {k: v for k, v in (params or {}).items() if k != "name"}
        settings = self.info.settings_class()
        if settings is not None:
            for key in Schema.from_dataclass(settings).parameters:
                params.pop(key, None)
        if registry is not None:
            declared = factory_arguments(self.factory)  # None: takes **kwargs
            for nested in self.info.nested:
                if declared is not None and nested.parameter not in declared:
                    continue  # a component without that block (a tokenizer with its own quantiser)
                block = params.get(nested.parameter)
                if block is None and nested.default is not None:
                    block = {"name": nested.default}
                if isinstance(block, dict):
                    passes = {arg: params[arg] for arg in nested.passes if arg in params}
                    params[nested.parameter] = registry.build_nested(nested.kind, block, nested.parameter, **passes)
        accepted = {k: v for k, v in injected.items() if k in self.injected}
        built = self.factory(**params, **accepted)
        base = self.info.contract_class()
        if base is not None and not inspect.isclass(self.factory) and not isinstance(built, base):
            raise RegistryError(
                f"{self.provider}: {self.kind} '{self.name}' built a {type(built).__name__}, not a "
                f"{base.__module__}.{base.__qualname__}."
            )
        return built

    def __repr__(self) -> str:
        return f"Component({self.kind!r}, {self.name!r}, provider={self.provider!r})"


class Registry:
    """All components known to this process, by kind and name."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}

    def register(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        description: str | None = None,
        schema: type | Schema | None = None,
        injected: Sequence[str] | None = None,
        provider: str = "<unknown>",
        package: str | None = None,
        aliases: Sequence[str] = (),
    ) -> Component:
        """Add a component.

        `factory` is a callable, or ``".module:Name"`` in the plugin's own package, imported on
        first use. `schema` is a dataclass or a `Schema`; by default the factory's signature and
        type hints give it, less the arguments the engine supplies to this kind (`kinds`).
        `aliases` are former names recipes may still use. `injected` is deprecated: those
        arguments are now inferred from the factory's signature.
        """
        kind = canonical(kind)
        if kind not in self._components:
            raise RegistryError(
                f"{provider} registers '{name}' under unknown kind '{kind}'."
                f"{did_you_mean(kind, KINDS)} Kinds: {', '.join(KINDS)}."
            )
        if not name or not isinstance(name, str):
            raise RegistryError(f"{provider} registers a {kind} without a name.")
        for taken in (name, *aliases):
            existing = self._components[kind].get(self._aliases[kind].get(taken, taken))
            if existing is not None:
                raise RegistryError(
                    f"{kind} '{taken}' is registered twice: by {existing.provider} and by {provider}. "
                    f"Uninstall one of them, or rename the component in your plugin."
                )
        if injected is not None:
            warnings.warn(
                f"{provider}: register(..., injected=...) is deprecated and will be removed; the engine-supplied "
                f"arguments of a {kind} are inferred from the factory's signature.",
                DeprecationWarning,
                stacklevel=3,
            )
        component = Component(
            kind, name, factory, provider=provider, package=package, description=description, schema=schema,
            injected=injected,
        )
        self._components[kind][name] = component
        self._aliases[kind].update({alias: name for alias in aliases})
        component.aliases = tuple(aliases)
        return component

    def get(self, kind: str, name: str) -> Component:
        """The component `name` of `kind`, or an error listing what is available."""
        kind = canonical(kind)
        if kind not in self._components:
            raise RegistryError(f"unknown component kind '{kind}'. Kinds: {', '.join(KINDS)}.")
        try:
            return self._components[kind][self._aliases[kind].get(name, name)]
        except (KeyError, TypeError):
            available = ", ".join(sorted(self._components[kind])) or "(none installed)"
            raise RegistryError(
                f"unknown {kind} '{name}'.{did_you_mean(str(name), list(self._components[kind]))}"
                f" Available: {available}."
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[canonical(kind)])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self._components[kind][n] for n in sorted(self._components[kind]))

    def build(self, kind: str, block: dict, **injected: Any) -> Any:
        """Build the component a validated recipe block names (its nested blocks with this registry)."""
        return self.get(kind, block["name"]).build(block, registry=self, **injected)

    def build_nested(self, kind: str, block: dict, where: str, **injected: Any) -> Any:
        """Build a nested block, validating it first when it did not come through a recipe."""
        component = self.get(kind, block.get("name"))
        params = component.schema.validate(block, path=(where,), owner=f"{kind} '{component.name}'", ignore=("name",))
        return component.build(params, registry=self, **injected)

    def check_all(self) -> list[str]:
        """Resolve every component (imports them all); the messages of those that fail their contract."""
        problems = []
        for component in self:
            try:
                component.schema  # noqa: B018 - resolving is the check
            except (RegistryError, RecipeError) as exc:
                problems.append(str(exc))
        return problems

    def for_provider(self, provider: str, package: str | None = None) -> ProviderRegistry:
        return ProviderRegistry(self, provider, package)


class ProviderRegistry:
    """The view of the registry one plugin receives: its registrations carry its name and package."""

    def __init__(self, registry: Registry, provider: str, package: str | None = None) -> None:
        self._registry = registry
        self.provider = provider
        self.package = package

    def register(self, kind: str, name: str, factory: Callable[..., Any] | str, **options: Any) -> Component:
        """Register a component; see `Registry.register`."""
        options.pop("provider", None)
        options.pop("package", None)
        return self._registry.register(kind, name, factory, provider=self.provider, package=self.package, **options)

    def get(self, kind: str, name: str) -> Component:
        return self._registry.get(kind, name)
