"""The registry, typed schemas and the pluggy plugin contract."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pluggy
import pytest

from brainsynth.core import hookspecs, plugins, tokenizer
from brainsynth.core.errors import RecipeError, RegistryError
from brainsynth.core.hookspecs import hookimpl
from brainsynth.core.registry import KINDS, Registry
from brainsynth.core.schema import Schema


class Codebook(tokenizer.Codebook):
    """A codebook for tests."""

    def __init__(self, embedding_dim: int, size: int = 8, decay: float = 0.99, init: Literal["normal", "kaiming_uniform"] = "normal") -> None:
        super().__init__()
        self.embedding_dim, self.size, self.decay, self.init = embedding_dim, size, decay, init

    def quantize(self, z):
        return z

    codes = None


def test_kinds_cover_the_contract():
    for kind in ("tokenizer", "prior", "discriminator", "codebook", "loss", "adversarial_loss",
                 "ordering", "conditioning", "dataset", "metric", "set_metric", "optimizer", "lr_schedule"):
        assert kind in KINDS


def test_component_schema_from_signature_excludes_injected():
    reg = Registry()
    with pytest.warns(DeprecationWarning, match="injected"):  # kept for one release; inferred since
        component = reg.register("codebook", "test_codebook", Codebook, injected=("embedding_dim",), provider="tests")
    assert list(component.schema.parameters) == ["size", "decay", "init"]
    assert component.schema.parameters["decay"].default == 0.99
    assert component.description == "A codebook for tests."
    built = reg.build("codebook", {"name": "test_codebook", "size": 4, "decay": 0.5, "init": "normal"}, embedding_dim=3, unrelated=1)
    assert (built.embedding_dim, built.size, built.decay) == (3, 4, 0.5)


@dataclasses.dataclass
class Inner:
    rate: float = 1.0


@dataclasses.dataclass
class Outer:
    sizes: tuple[int, ...]
    inner: Inner = dataclasses.field(default_factory=Inner)
    label: str | None = None


def test_schema_from_dataclass_and_coercion():
    schema = Schema.from_dataclass(Outer)
    resolved = schema.validate({"sizes": [1, 2], "inner": {"rate": 2}})
    assert resolved == {"sizes": (1, 2), "inner": {"rate": 2.0}, "label": None}
    assert isinstance(resolved["inner"]["rate"], float)
    with pytest.raises(RecipeError, match=r"sizes\.1: expected int, got str"):
        schema.validate({"sizes": [1, "x"]})
    with pytest.raises(RecipeError, match="expected int, got bool"):
        schema.validate({"sizes": [True]})


def test_unknown_component_lists_available_names():
    reg = Registry()
    reg.register("codebook", "ema", Codebook, provider="tests")
    reg.register("codebook", "vanilla", Codebook, provider="tests")
    with pytest.raises(RegistryError, match=r"unknown codebook 'emma'\. Did you mean 'ema'\? Available: ema, vanilla\."):
        reg.get("codebook", "emma")


def test_unknown_kind_is_refused():
    with pytest.raises(RegistryError, match="unknown kind 'netwrk'"):
        Registry().register("netwrk", "x", Codebook, provider="tests")


def _plugin(register_name: str):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_components(registry):
            registry.register("codebook", register_name, Codebook)

    return Plugin


def test_same_name_from_two_plugins_names_both_providers():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_plugin("ema"), name="first-dist:first")
    pm.register(_plugin("ema"), name="second-dist:second")
    with pytest.raises(RegistryError) as info:
        plugins.build_registry(pm)
    message = str(info.value)
    assert "codebook 'ema' is registered twice" in message
    assert "first-dist (first)" in message and "second-dist (second)" in message


def test_builtins_load_through_the_entry_point_group():
    pm = plugins.plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert "brainsynth:tasks" in names and "brainsynth:datasets" in names
    task = plugins.registry().get("task", "transformer")
    assert task.provider == "brainsynth (tasks)"
    assert plugins.registry().get("dataset", "tokens").provider == "brainsynth (datasets)"


def test_load_plugins_switch_restricts_plugins(monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "tasks")
    plugins.reset()
    try:
        reg = plugins.registry()
        assert reg.names("task") == ["pipeline", "prior", "tokenizer"]
        assert reg.names("dataset") == []
    finally:
        monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV)
        plugins.reset()
    assert "tokens" in plugins.registry().names("dataset")


def test_plugin_registered_at_runtime_is_listed(extra_plugin, run_cli):
    from _toy_plugin import ToyPlugin

    extra_plugin(ToyPlugin, "toy-dist:toy")
    result = run_cli("plugins", "--kind", "transformer")
    assert result.code == 0
    assert "bigram" in result.out and "toy-dist (toy)" in result.out
    assert "dim: int (default 16)" in result.out


def test_a_misspelled_hook_is_refused_naming_the_plugin():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)

    class Misspelled:
        @hookimpl
        def register_component(self, registry):  # register_components
            raise AssertionError("never called")

    pm.register(Misspelled(), name="brainsynth-foo:foo")
    with pytest.raises(RegistryError, match=r"plugin brainsynth-foo \(foo\) implements a hook brainsynth does not "
                                            r"have: 'register_component'\. Did you mean 'register_components'\?"):
        plugins.check_hooks(pm)


def test_the_installed_plugins_implement_only_known_hooks():
    plugins.check_hooks(plugins.plugin_manager())
