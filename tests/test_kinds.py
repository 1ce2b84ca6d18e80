"""Kinds as data: contracts checked at registration, engine arguments inferred, hooks checked,
optimizers and schedules as plugins, the ``prior`` name with its ``transformer`` alias, and a
``validate`` that imports no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest
import torch
import yaml
from _toy_plugin import recipe_text

from brainsynth.core import hookspecs, plugins
from brainsynth.core.errors import RecipeError, RegistryError
from brainsynth.core.hookspecs import hookimpl
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import Conditioning, Prior
from brainsynth.core.registry import Registry
from brainsynth.core.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


def _manager(*plugins_by_name: tuple[object, str]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin, name in plugins_by_name:
        pm.register(plugin, name=name)
    return pm


def _registering(kind: str, name: str, factory) -> type:
    class Plugin:
        @staticmethod
        @hookimpl
        def register_components(registry):
            registry.register(kind, name, factory)

    return Plugin


# -- contracts ------------------------------------------------------------------------------------


class UnconditionedPrior(Prior):
    """A prior that forgot the conditioning argument: it would train and silently ignore conditions."""

    def __init__(self, num_tokens: int, dim: int = 8) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, tokens, conditioning=None):
        return tokens


class NotAnOrdering:
    """Walks a grid, but is not an `Ordering`."""

    def __init__(self, spatial_shape: tuple[int, ...]) -> None:
        self.spatial_shape = spatial_shape


class WalklessOrdering(Ordering):
    """Subclasses `Ordering` but never says how to walk."""

    def __init__(self, spatial_shape: tuple[int, ...]) -> None:
        super().__init__(spatial_shape)


@pytest.mark.parametrize("kind, factory, expected", [
    ("prior", UnconditionedPrior, "registers prior 'bad' whose class lacks `conditioning`"),
    ("ordering", NotAnOrdering, "registers ordering 'bad' whose class lacks the base class brainsynth.core.ordering.Ordering"),
    ("ordering", WalklessOrdering, "registers ordering 'bad' whose class lacks `walk`"),
    ("transformer", UnconditionedPrior, "registers prior 'bad' whose class lacks `conditioning`"),  # the old kind name
])
def test_a_component_that_misses_its_contract_is_refused_at_registration(kind, factory, expected):
    pm = _manager((_registering(kind, "bad", factory), "my-plugin-dist:my_plugin"))
    with pytest.raises(RegistryError) as info:
        plugins.build_registry(pm)
    message = str(info.value)
    assert message.startswith(f"my-plugin-dist (my_plugin) {expected}"), message
    assert "\n" not in message


def test_a_lazily_named_component_is_checked_when_first_used(tmp_path, monkeypatch):
    package = tmp_path / "lazy_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from brainsynth.core.hookspecs import hookimpl

        @hookimpl
        def register_components(registry):
            registry.register("ordering", "backwards", ".backwards:Backwards")
            registry.register("ordering", "walkless", ".walkless:Walkless")
    '''))
    (package / "backwards.py").write_text(textwrap.dedent('''
        from brainsynth.core.ordering import Ordering, raster_walk

        class Backwards(Ordering):
            """The raster scan read backwards."""

            def __init__(self, spatial_shape, start: int = 0):
                super().__init__(spatial_shape)

            def walk(self, shape):
                return raster_walk(shape)[::-1]
    '''))
    (package / "walkless.py").write_text(textwrap.dedent('''
        from brainsynth.core.ordering import Ordering

        class Walkless(Ordering):
            """Never says how to walk."""
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_plugin_pkg

    registry = plugins.build_registry(_manager((lazy_plugin_pkg, "lazy-dist:lazy")))
    assert "lazy_plugin_pkg.backwards" not in sys.modules  # registering imported nothing
    backwards = registry.get("ordering", "backwards")
    assert list(backwards.schema.parameters) == ["start"] and "lazy_plugin_pkg.backwards" in sys.modules
    built = registry.build("ordering", {"name": "backwards", "start": 0}, spatial_shape=(2, 2))
    assert built.sequence(torch.arange(4).reshape(1, 2, 2)).tolist() == [[3, 2, 1, 0]]
    with pytest.raises(RegistryError, match=r"lazy-dist \(lazy\) registers ordering 'walkless' whose class lacks `walk`"):
        registry.get("ordering", "walkless").factory
    assert registry.check_all() == [
        "lazy-dist (lazy) registers ordering 'walkless' whose class lacks `walk`. The ordering contract: be or build a "
        "brainsynth.core.ordering.Ordering; implement walk; accept spatial_shape; engine supplies spatial_shape."
    ]


def test_a_lazy_factory_outside_the_plugins_own_package_is_refused():
    registry = Registry()
    registry.register("loss", "shell", "os:system", provider="evil-dist (evil)", package="evil")
    with pytest.raises(RegistryError, match=r"evil-dist \(evil\) registers loss 'shell' as 'os:system'; a lazily named factory is '.module:Name'"):
        registry.get("loss", "shell").factory


# -- engine-supplied arguments ----------------------------------------------------------------------


class WidthOnly(Conditioning):
    """Takes the model width the engine supplies, not the number of levels."""

    def __init__(self, variables=(), model_dim: int = 0) -> None:
        super().__init__(variables, model_dim)
        self.received = {"model_dim": model_dim}


class NothingSupplied(Conditioning):
    """Takes none of the engine's arguments."""

    def __init__(self, variables=(), dim: int = 3) -> None:
        super().__init__(variables, dim)


def test_engine_arguments_are_inferred_from_the_factory_signature():
    registry = Registry()
    width = registry.register("conditioning", "width_only", WidthOnly, provider="tests")
    nothing = registry.register("conditioning", "nothing", NothingSupplied, provider="tests")
    assert width.injected == ("model_dim",) and nothing.injected == ()
    assert "model_dim" not in width.schema.parameters and "num_levels" not in nothing.schema.parameters
    built = registry.build("conditioning", {"name": "width_only", "variables": []}, model_dim=16, num_levels={"sex": 2})
    assert built.received == {"model_dim": 16}
    plain = registry.build("conditioning", {"name": "nothing", "variables": [], "dim": 5}, model_dim=16, num_levels={})
    assert plain.dim == 5  # model_dim was not passed (it would have been a TypeError)


def test_a_tokenizer_gets_its_codebook_built_with_the_runs_registry():
    registry = plugins.registry()
    block = {"name": "baseline_vqvae", "channels": 4, "levels": 1, "num_res_layers": 0, "embedding_dim": 3,
             "codebook": {"name": "vanilla", "num_embeddings": 5}}
    params = registry.get("tokenizer", "baseline_vqvae").schema.validate(block, ignore=("name",))
    network = registry.build("tokenizer", {"name": "baseline_vqvae", **params})
    assert type(network.codebook).__name__ == "VanillaCodebook"
    assert (network.codebook.num_embeddings, network.codebook.embedding_dim) == (5, 3)


class OwnCodebookTokenizer(Tokenizer):
    """Makes its own codebook, so it declares no ``codebook`` parameter."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        from brainsynth.plugins.codebooks.vanilla import VanillaCodebook

        self.codebook, self.spatial_dims, self.in_channels = VanillaCodebook(num_embeddings=4, embedding_dim=width), 3, 1

    def encode(self, x):
        return x

    def decode(self, quantized):
        return quantized

    def token_grid(self, spatial_shape):
        return tuple(spatial_shape)

    def output_shape(self, grid):
        return tuple(grid)


def test_a_tokenizer_without_a_codebook_parameter_gets_no_codebook_block():
    registry = Registry()  # no codebooks at all: building the default `ema` block would fail
    registry.register("tokenizer", "own_codebook", OwnCodebookTokenizer, provider="tests")
    network = registry.build("tokenizer", {"name": "own_codebook", "width": 5})
    assert network.codebook.embedding_dim == 5


# -- hooks --------------------------------------------------------------------------------------------


def test_a_misspelled_hook_is_one_line_naming_the_plugin():
    class Misspelled:
        @staticmethod
        @hookimpl
        def register_component(registry):  # register_components
            raise AssertionError("never called")

    pm = _manager((Misspelled, "typo-dist:typo"))
    with pytest.raises(RegistryError) as info:
        plugins.check_hooks(pm)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("plugin typo-dist (typo) implements a hook brainsynth does not have: 'register_component'.")
    assert "Did you mean 'register_components'?" in message


# -- optimizers and schedules from a plugin -------------------------------------------------------


class RecordingSGD(torch.optim.SGD):
    """SGD that remembers the learning rate of every step."""

    steps: list[float] = []

    def step(self, closure=None):
        RecordingSGD.steps.append(self.param_groups[0]["lr"])
        return super().step(closure)


def recording_sgd(parameters, lr: float = 0.1, momentum: float = 0.0) -> torch.optim.Optimizer:
    """A third party's optimizer."""
    return RecordingSGD(parameters, lr=lr, momentum=momentum)


def halving(optimizer, every: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """A third party's schedule: halve the learning rate every `every` steps."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=0.5)


class ThirdPartyTraining:
    @staticmethod
    @hookimpl
    def register_components(registry):
        registry.register("optimizer", "recording_sgd", recording_sgd)
        registry.register("lr_schedule", "halving", halving)


def test_a_third_party_optimizer_and_schedule_train_from_a_recipe(toy, extra_plugin, run_cli, tmp_path, token_grids):
    extra_plugin(ThirdPartyTraining, "optim-dist:optim")
    recipe = tmp_path / "r.yaml"
    text = recipe_text(token_grids, tmp_path / "runs", epochs=1).replace(
        "optimizer: {lr: 0.05}", "optimizer: {name: recording_sgd, lr: 0.08, schedule: {name: halving, every: 1}}"
    )
    recipe.write_text(text)
    shown = run_cli("validate", str(recipe), "--show")
    assert shown.code == 0, shown
    assert yaml.safe_load(shown.out)["optimizer"] == {
        "name": "recording_sgd", "lr": 0.08, "momentum": 0.0, "grad_clip": None, "schedule": {"name": "halving", "every": 1},
    }
    RecordingSGD.steps.clear()
    result = run_cli("run", str(recipe))
    assert result.code == 0, result
    assert RecordingSGD.steps[:3] == [0.08, 0.04, 0.02]
    wrong = run_cli("validate", str(recipe), "--set", "optimizer.schedule.evry=2")
    assert wrong.code == 2 and "optimizer.schedule.evry: unknown key for lr_schedule 'halving'. Did you mean 'every'?" in wrong.err


# -- listing and names -----------------------------------------------------------------------------


def test_plugins_kind_task_lists_sections_and_modes(run_cli):
    result = run_cli("plugins", "--kind", "task")
    assert result.code == 0, result
    out = result.out
    assert "[task] be or build a brainsynth.core.task.Task; implement run" in out
    assert "prior " in out and "(also: transformer)" in out
    assert "modes: train, sample, likelihood, evaluate" in out
    assert "network (prior block, required): the prior network" in out
    assert "optimizer (optimizer block, default adam)" in out
    assert "modes: train, extract, decode, evaluate" in out and "discriminator_optimizer (optimizer block, default adam)" in out


def test_task_transformer_and_the_transformer_kind_still_work(toy, run_cli, tmp_path, token_grids):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(token_grids, tmp_path / "runs"))
    assert "task: transformer\n" in recipe.read_text()
    result = run_cli("validate", str(recipe))
    assert result.code == 0 and "valid (task transformer, mode train)" in result.out
    recipe.write_text(recipe.read_text().replace("task: transformer\n", "task: prior\n"))
    assert run_cli("validate", str(recipe)).code == 0
    registry = plugins.registry()
    assert registry.get("task", "transformer") is registry.get("task", "prior")
    assert registry.get("transformer", "xtransformer") is registry.get("prior", "xtransformer")
    listed = run_cli("plugins", "--kind", "transformer")
    assert listed.code == 0 and "[prior]" in listed.out and "xtransformer" in listed.out


# -- start-up ------------------------------------------------------------------------------------------


HEAVY = ("monai", "x_transformers", "performer_pytorch", "matplotlib")


@pytest.mark.slow
@pytest.mark.parametrize("command", [["validate", "recipes/demo.yaml"], ["plugins"]])
def test_validate_and_plugins_import_no_heavy_library(command):
    script = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules))))\n"
        "from brainsynth.cli import main\n"
        f"main({command!r})\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


OLD_OPTIMIZER = (
    "optimizer: {name: adam, lr: 0.001, betas: [0.9, 0.999], momentum: 0.0, weight_decay: 0.0, grad_clip: null,"
    " schedule: {name: constant, gamma: null, final_lr: null}}\n"
)


def test_a_recipe_saved_before_optimizers_were_components_still_loads(toy, tmp_path, token_grids):
    from brainsynth.core.recipe import recipe_from_text
    from brainsynth.core.records import differences

    saved = recipe_text(token_grids, tmp_path / "runs").replace("optimizer: {lr: 0.05}\n", OLD_OPTIMIZER)
    recipe = recipe_from_text(saved, plugins.registry(), "recipe.yaml")
    assert recipe["optimizer"] == {"name": "adam", "lr": 0.001, "betas": (0.9, 0.999), "weight_decay": 0.0,
                                   "grad_clip": None, "schedule": {"name": "constant"}}
    recorded, resolved = (yaml.safe_load(text)["optimizer"] for text in (saved, recipe.text()))
    assert differences({"optimizer": recorded}, {"optimizer": resolved}) == []  # --resume sees no change
    with pytest.raises(RecipeError, match="optimizer.momentum: unknown key for optimizer 'adam'"):
        recipe_from_text(saved.replace("momentum: 0.0", "momentum: 0.9"), plugins.registry(), "recipe.yaml")
