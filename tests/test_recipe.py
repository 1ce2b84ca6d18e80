"""Recipes: safe YAML, extends, --set overrides, and every error kind with file, key path and line."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from brainsynth.core import ordering, prior, tokenizer
from brainsynth.core.errors import RecipeError
from brainsynth.core.recipe import load_recipe
from brainsynth.core.registry import Registry
from brainsynth.core.schema import component_block
from brainsynth.core.task import Section, Task


class Network(prior.Prior):
    """A network for recipe tests (the recipe reads only its signature)."""

    def __init__(self, num_tokens: int, dim: int, depth: int = 2, rotary: bool = False, conditioning=None) -> None:
        super().__init__()

    def forward(self, tokens, conditioning=None):
        return tokens


class Ordering(ordering.Ordering):
    """An ordering for recipe tests."""

    def __init__(self, spatial_shape: tuple, flip: bool = False) -> None:
        super().__init__(spatial_shape)

    def walk(self, shape):
        return ordering.raster_walk(shape)


class EmaCodebook(tokenizer.Codebook):
    """A codebook for recipe tests."""

    def __init__(self, embedding_dim: int, decay: float = 0.99) -> None:
        super().__init__()

    def quantize(self, z):
        return z

    codes = None


class VQVAE(tokenizer.Tokenizer):
    """A tokenizer with a nested codebook block."""

    def __init__(self, channels: int = 8, codebook: component_block("codebook") = {"name": "ema"}) -> None:
        super().__init__()

    encode = decode = token_grid = output_shape = lambda self, value: value


class TokenizerTask(Task):
    sections = {"network": Section(kind="tokenizer", required=True)}
    modes = ("train",)

    def run(self, run):
        return {}


@dataclasses.dataclass
class TrainSection:
    epochs: int = 1
    batch_size: int = 2


class PriorTask(Task):
    """A task for recipe tests."""

    sections = {
        "network": Section(kind="transformer", required=True),
        "ordering": Section(kind="ordering", default="raster_scan"),
        "train": Section(schema=TrainSection),
    }
    modes = ("train", "sample")

    def run(self, run):
        return {}


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register("task", "prior", PriorTask, provider="tests")
    reg.register("prior", "xtransformer", Network, provider="tests")
    reg.register("ordering", "raster_scan", Ordering, provider="tests")
    reg.register("ordering", "s_curve", Ordering, provider="tests")
    reg.register("task", "tokenizer", TokenizerTask, provider="tests")
    reg.register("tokenizer", "vqvae", VQVAE, provider="tests")
    reg.register("codebook", "ema", EmaCodebook, provider="tests")
    return reg


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


BASE = """
task: prior
experiment: {name: base}
network:
  name: xtransformer
  dim: 64
train:
  epochs: 3
"""


def test_resolved_recipe_has_defaults(tmp_path, registry):
    recipe = load_recipe(write(tmp_path / "r.yaml", BASE), registry)
    assert recipe["network"] == {"name": "xtransformer", "dim": 64, "depth": 2, "rotary": False}
    assert recipe["ordering"] == {"name": "raster_scan", "flip": False}
    assert recipe["train"] == {"epochs": 3, "batch_size": 2}
    assert recipe.mode == "train" and recipe["seed"] == 0 and recipe["experiment"]["root"] == "runs"


def test_unknown_key_names_file_path_line_and_suggestion(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE + "  batch_sise: 4\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry)
    message = str(info.value)
    assert f"{path}:8: train.batch_sise: unknown key" in message
    assert "Did you mean 'batch_size'?" in message


def test_unknown_key_inside_component_block(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE.replace("  dim: 64", "  dim: 64\n  dpeth: 4"))
    with pytest.raises(RecipeError, match=rf"{path}:6: network\.dpeth: unknown key for transformer 'xtransformer'\. Did you mean 'depth'\?"):
        load_recipe(path, registry)


def test_unknown_top_level_key(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE + "ordring: {name: s_curve}\n")
    with pytest.raises(RecipeError, match=rf"{path}:8: ordring: unknown key for task 'prior'\. Did you mean 'ordering'\?"):
        load_recipe(path, registry)


def test_wrong_type(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE.replace("epochs: 3", "epochs: three"))
    with pytest.raises(RecipeError, match=rf"{path}:7: train\.epochs: expected int, got str 'three'"):
        load_recipe(path, registry)


def test_missing_required_value(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE.replace("  dim: 64\n", ""))
    with pytest.raises(RecipeError, match=rf"{path}:3: network: missing required value 'dim' \(int\) for transformer 'xtransformer'"):
        load_recipe(path, registry)


def test_unknown_component_name_lists_available(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE + "ordering: {name: hilbert}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry)
    assert f"{path}:8: ordering.name: unknown ordering 'hilbert'." in str(info.value)
    assert "Available: raster_scan, s_curve." in str(info.value)


def test_unknown_task_and_mode(tmp_path, registry):
    with pytest.raises(RecipeError, match=r":1: task: unknown task 'prio'\. Did you mean 'prior'\?"):
        load_recipe(write(tmp_path / "a.yaml", BASE.replace("task: prior", "task: prio")), registry)
    with pytest.raises(RecipeError, match=r"mode: task 'prior' has no mode 'smaple'\. Did you mean 'sample'\?"):
        load_recipe(write(tmp_path / "b.yaml", BASE), registry, mode="smaple")


def test_python_tags_are_rejected(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE + "seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry)
    assert f"{path}:8:" in str(info.value)
    assert "python/object" in str(info.value) and "plain data only" in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE + "train: [unclosed\n")
    with pytest.raises(RecipeError, match=rf"{path}:\d+: invalid YAML"):
        load_recipe(path, registry)


def test_extends_deep_merges_and_keeps_base_lines(tmp_path, registry):
    write(tmp_path / "base.yaml", BASE)
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.yaml", """
        extends: ../base.yaml
        experiment: {name: child}
        network: {depth: 8}
        """)
    recipe = load_recipe(child, registry)
    assert recipe["network"] == {"name": "xtransformer", "dim": 64, "depth": 8, "rotary": False}
    assert recipe["experiment"]["name"] == "child" and recipe["train"]["epochs"] == 3
    # an error in a key that comes from the base is reported in the base file
    write(tmp_path / "base.yaml", BASE.replace("epochs: 3", "epochs: 3.5"))
    with pytest.raises(RecipeError, match=rf"{tmp_path / 'base.yaml'}:7: train\.epochs: expected int"):
        load_recipe(child, registry)


def test_extends_cycle_is_detected(tmp_path, registry):
    write(tmp_path / "a.yaml", "extends: b.yaml\n" + BASE)
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="'extends' forms a cycle"):
        load_recipe(tmp_path / "a.yaml", registry)


def test_extends_missing_base(tmp_path, registry):
    path = write(tmp_path / "a.yaml", "extends: nowhere.yaml\n" + BASE)
    with pytest.raises(RecipeError, match=rf"{path}:1: extends: base recipe 'nowhere.yaml' not found"):
        load_recipe(path, registry)


def test_set_overrides_are_typed_as_yaml(tmp_path, registry):
    path = write(tmp_path / "r.yaml", BASE)
    recipe = load_recipe(path, registry, overrides=["network.depth=12", "network.rotary=true", "ordering.name=s_curve", "seed=7"])
    assert recipe["network"]["depth"] == 12 and recipe["network"]["rotary"] is True
    assert recipe["ordering"]["name"] == "s_curve" and recipe["seed"] == 7
    with pytest.raises(RecipeError, match=r"--set train\.epochs: train\.epochs: expected int, got str 'many'"):
        load_recipe(path, registry, overrides=["train.epochs=many"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        load_recipe(path, registry, overrides=["train.epochs"])


def test_missing_recipe_file(tmp_path, registry):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml", registry)


def test_nested_component_blocks_are_validated(tmp_path, registry):
    head = "task: tokenizer\nexperiment: {name: t}\nnetwork:\n  name: vqvae\n"
    recipe = load_recipe(write(tmp_path / "a.yaml", head), registry)
    assert recipe["network"]["codebook"] == {"name": "ema", "decay": 0.99}
    recipe = load_recipe(write(tmp_path / "b.yaml", head + "  codebook: {name: ema, decay: 0.5}\n"), registry)
    assert recipe["network"]["codebook"] == {"name": "ema", "decay": 0.5}
    path = write(tmp_path / "c.yaml", head + "  codebook:\n    name: ema\n    decya: 0.5\n")
    with pytest.raises(RecipeError, match=rf"{path}:7: network\.codebook\.decya: unknown key for codebook 'ema'\. Did you mean 'decay'\?"):
        load_recipe(path, registry)
    path = write(tmp_path / "d.yaml", head + "  codebook: {name: emma}\n")
    with pytest.raises(RecipeError, match=r"network\.codebook\.name: unknown codebook 'emma'\. Did you mean 'ema'\?"):
        load_recipe(path, registry)
