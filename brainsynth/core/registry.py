"""The registry: component kind -> name -> component.

A component is a name, a factory, a typed parameter schema (from the factory's signature or a
dataclass), a one-line description and the distribution that provided it. Plugins fill the
registry through the ``register_components`` hook; recipes choose components by name only.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import RegistryError
from .schema import Schema, did_you_mean

KINDS: tuple[str, ...] = (
    "task",
    "tokenizer",
    "transformer",
    "discriminator",
    "codebook",
    "loss",
    "adversarial_loss",
    "ordering",
    "conditioning",
    "dataset",
    "metric",
    "set_metric",
)
"""Component kinds. ``task`` is a workflow (tokenizer, transformer, pipeline) that reads a recipe."""


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered factory with its parameter schema."""

    kind: str
    name: str
    factory: Callable[..., Any]
    schema: Schema
    description: str
    provider: str
    injected: tuple[str, ...] = ()

    def build(self, params: dict | None = None, **injected: Any) -> Any:
        """Call the factory with validated recipe parameters plus engine-supplied values."""
        params = {k: v for k, v in (params or {}).items() if k != "name"}
        accepted = {k: v for k, v in injected.items() if k in self.injected}
        return self.factory(**params, **accepted)


def _first_line(factory: Callable) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """All components known to this process, by kind and name."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def register(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        *,
        description: str | None = None,
        schema: type | Schema | None = None,
        injected: Sequence[str] = (),
        provider: str = "<unknown>",
    ) -> Component:
        """Add a component.

        `schema` is a dataclass or a `Schema`; by default the factory's signature and type hints
        give it. `injected` names factory arguments the engine supplies at build time (the
        vocabulary size, the number of spatial dimensions, ...); they are not recipe keys.
        """
        if kind not in self._components:
            raise RegistryError(
                f"{provider} registers '{name}' under unknown kind '{kind}'."
                f"{did_you_mean(kind, KINDS)} Kinds: {', '.join(KINDS)}."
            )
        if not name or not isinstance(name, str):
            raise RegistryError(f"{provider} registers a {kind} without a name.")
        existing = self._components[kind].get(name)
        if existing is not None:
            raise RegistryError(
                f"{kind} '{name}' is registered twice: by {existing.provider} and by {provider}. "
                f"Uninstall one of them, or rename the component in your plugin."
            )
        if schema is None:
            schema = Schema.from_callable(factory, exclude=injected)
        elif not isinstance(schema, Schema):
            schema = Schema.from_dataclass(schema)
        component = Component(
            kind=kind,
            name=name,
            factory=factory,
            schema=schema,
            description=description if description is not None else _first_line(factory),
            provider=provider,
            injected=tuple(injected),
        )
        self._components[kind][name] = component
        return component

    def get(self, kind: str, name: str) -> Component:
        """The component `name` of `kind`, or an error listing what is available."""
        if kind not in self._components:
            raise RegistryError(f"unknown component kind '{kind}'. Kinds: {', '.join(KINDS)}.")
        try:
            return self._components[kind][name]
        except KeyError:
            available = ", ".join(sorted(self._components[kind])) or "(none installed)"
            raise RegistryError(
                f"unknown {kind} '{name}'.{did_you_mean(str(name), list(self._components[kind]))}"
                f" Available: {available}."
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self._components[kind][n] for n in sorted(self._components[kind]))

    def build(self, kind: str, block: dict, **injected: Any) -> Any:
        """Build the component a validated recipe block names."""
        return self.get(kind, block["name"]).build(block, **injected)

    def for_provider(self, provider: str) -> ProviderRegistry:
        return ProviderRegistry(self, provider)


class ProviderRegistry:
    """The view of the registry one plugin receives: its registrations carry its name."""

    def __init__(self, registry: Registry, provider: str) -> None:
        self._registry = registry
        self.provider = provider

    def register(self, kind: str, name: str, factory: Callable[..., Any], **options: Any) -> Component:
        """Register a component; see `Registry.register`."""
        options.pop("provider", None)
        return self._registry.register(kind, name, factory, provider=self.provider, **options)

    def get(self, kind: str, name: str) -> Component:
        return self._registry.get(kind, name)
