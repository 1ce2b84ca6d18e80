"""An error a plugin raises that is not brainsynth's own ends in one line naming the plugin and the
component, shows its traceback only under --debug, and leaves no run directory."""

from __future__ import annotations

import pytest
import torch
from _toy_plugin import recipe_text
from torch import nn

from brainsynth.core.errors import DataError
from brainsynth.core.hookspecs import hookimpl
from brainsynth.core.plugin_errors import blame, component_of
from brainsynth.core.prior import Prior
from brainsynth.core.registry import Registry

PROVIDER = "brainsynth-faulty (faulty)"


def _lookup(table: dict, key: str) -> int:
    return table[key]  # a helper of the plugin's module: the innermost frame is not a method


class FaultyPrior(Prior):
    """A prior with a bug in one place, chosen by `fail_in`."""

    def __init__(
        self, fail_in: str = "init", dim: int = 8, *, num_tokens: int, max_seq_len: int, conditioning=None
    ) -> None:
        super().__init__()
        self.num_tokens, self.sequence_length, self.conditioning = num_tokens, max_seq_len, conditioning
        self.fail_in = fail_in
        if fail_in == "init":
            raise ValueError("dim must be a power of two")
        self.embedding = nn.Embedding(num_tokens, dim)
        self.head = nn.Linear(dim, num_tokens)

    def forward(self, tokens: torch.Tensor, conditioning=None) -> torch.Tensor:
        if self.fail_in == "forward":
            _lookup({}, "layer_scale")
        if self.fail_in == "data":
            raise DataError("a brainsynth error of the plugin's own, already one line")
        return self.head(self.embedding(tokens))


def faulty_ordering(spatial_shape: tuple[int, ...]):
    """A factory function (not a class) that fails."""
    raise IndexError(f"no walk for a {len(spatial_shape)}D grid")


class FaultyPlugin:
    @staticmethod
    @hookimpl
    def register_components(registry):
        registry.register("prior", "faulty", FaultyPrior)
        registry.register("ordering", "faulty_walk", faulty_ordering)


@pytest.fixture
def faulty(extra_plugin, toy):
    extra_plugin(FaultyPlugin, "brainsynth-faulty:faulty")


def _recipe(tmp_path, token_grids, network="{name: bigram, dim: 8}", ordering="{name: flat}"):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs", epochs=1)
                      .replace("network: {name: bigram, dim: 8}", f"network: {network}")
                      .replace("ordering: {name: flat}", f"ordering: {ordering}"))
    return recipe


def _one_plugin_line(result) -> str:
    assert result.code == 1, result
    assert result.err.count("\n") == 1 and result.err.startswith("error: plugin "), result.err
    assert "Traceback" not in result.err and "--debug" in result.err
    return result.err


@pytest.mark.parametrize(
    ("network", "ordering", "component", "what"),
    [
        ("{name: faulty, fail_in: init}", "{name: flat}", "'faulty'", "ValueError: dim must be a power of two"),
        ("{name: faulty, fail_in: forward}", "{name: flat}", "'faulty'", "KeyError: 'layer_scale'"),
        ("{name: bigram, dim: 8}", "{name: faulty_walk}", "ordering 'faulty_walk'", "IndexError: no walk for a 3D grid"),
    ],
    ids=["building", "running", "factory-function"],
)
def test_a_plugin_error_names_the_plugin_and_component_and_leaves_nothing(
    faulty, run_cli, tmp_path, token_grids, network, ordering, component, what
):
    line = _one_plugin_line(run_cli("run", str(_recipe(tmp_path, token_grids, network, ordering))))
    assert f"plugin {PROVIDER}, " in line and component in line and what in line, line
    assert "test_plugin_errors.py" in line  # where it was raised
    assert not (tmp_path / "runs" / "toy").exists()


def test_debug_shows_the_plugin_s_own_traceback(faulty, run_cli, tmp_path, token_grids):
    with pytest.raises(KeyError, match="layer_scale"):
        run_cli("--debug", "run", str(_recipe(tmp_path, token_grids, "{name: faulty, fail_in: forward}")))
    assert not (tmp_path / "runs" / "toy").exists()


def test_a_brainsynth_error_raised_by_a_plugin_stays_its_own_line(faulty, run_cli, tmp_path, token_grids):
    result = run_cli("run", str(_recipe(tmp_path, token_grids, "{name: faulty, fail_in: data}")))
    assert result.code == 2 and result.err == "error: a brainsynth error of the plugin's own, already one line\n"
    assert not (tmp_path / "runs" / "toy").exists()


def _raised(function, *args):
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("expected an exception")


def test_blame_finds_the_innermost_component_and_nothing_outside_components():
    registry = Registry()
    FaultyPlugin.register_components(registry=registry.for_provider(PROVIDER))
    prior = FaultyPrior(fail_in="forward", num_tokens=5, max_seq_len=4)
    error = _raised(prior, torch.zeros(1, 2, dtype=torch.long))  # through nn.Module.__call__
    component = component_of(error, registry)
    assert component.name == "faulty"
    assert blame(error, registry).startswith(f"plugin {PROVIDER}, {component.kind} 'faulty': KeyError: 'layer_scale' (raised in ")
    assert blame(_raised(_lookup, {}, "x"), registry) is None  # a module function: the module registers two components
    assert blame(_raised(int, "x"), registry) is None  # raised outside every component
    assert blame(_raised(prior.forward, torch.zeros(1, 1, dtype=torch.long)), None) is None
    prior.fail_in = "data"
    assert blame(_raised(prior, torch.zeros(1, 1, dtype=torch.long)), registry) is None  # brainsynth's own


class BrokenRegistration:
    @staticmethod
    @hookimpl
    def register_components(registry):
        settings = {}
        registry.register("metric", "needs_settings", settings["metric_class"])


def test_an_error_in_a_plugin_s_hook_names_the_plugin_and_the_hook(extra_plugin, run_cli):
    extra_plugin(BrokenRegistration, "brainsynth-broken-hook:broken")
    line = _one_plugin_line(run_cli("plugins"))
    assert line.startswith("error: plugin brainsynth-broken-hook (broken), in its register_components hook: "
                           "KeyError: 'metric_class' (raised in "), line
