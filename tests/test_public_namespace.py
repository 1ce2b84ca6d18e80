"""`import brainsynth`: the contracts, `hookimpl`, the errors, `load` and `build`, imported on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import brainsynth
from brainsynth.core import errors, prior, tokenizer
from brainsynth.core.hookspecs import hookimpl
from brainsynth.plugins.tokenizers.baseline_vqvae import BaselineVQVAE


def test_every_exported_name_resolves_to_its_defining_object():
    for name in brainsynth.__all__:
        assert getattr(brainsynth, name) is not None, name
    assert brainsynth.hookimpl is hookimpl and brainsynth.RecipeError is errors.RecipeError
    assert brainsynth.Prior is prior.Prior and brainsynth.Codebook is tokenizer.Codebook
    assert set(dir(brainsynth)) >= {"load", "build", "Tokenizer", "Ordering", "DataSource", "Task", "BrainsynthError"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        brainsynth.Nope  # noqa: B018


def test_build_makes_a_component_with_its_nested_block_as_a_recipe_does():
    network = brainsynth.build("tokenizer", {"name": "baseline_vqvae", "channels": 8, "levels": 2, "num_res_layers": 1,
                                             "embedding_dim": 4, "codebook": {"name": "vanilla", "num_embeddings": 8}})
    assert isinstance(network, BaselineVQVAE) and type(network.codebook).__name__ == "VanillaCodebook"
    codebook = brainsynth.build("codebook", {"name": "ema", "num_embeddings": 8}, embedding_dim=4)
    assert isinstance(codebook, brainsynth.Codebook) and codebook.embedding_dim == 4
    assert BaselineVQVAE(channels=8, levels=2, num_res_layers=1, embedding_dim=4, codebook=codebook).codebook is codebook


def test_build_refuses_a_mistake_in_one_line():
    with pytest.raises(brainsynth.RecipeError, match="Did you mean 'num_embeddings'"):
        brainsynth.build("codebook", {"name": "ema", "num_embedings": 8}, embedding_dim=4)
    with pytest.raises(brainsynth.RecipeError, match="a mapping with a 'name'"):
        brainsynth.build("codebook", "ema", embedding_dim=4)


def test_a_tokenizer_plugin_does_not_build_a_codebook_from_a_block_itself():
    """A plugin never builds another plugin's component through the process-wide registry."""
    with pytest.raises(brainsynth.RecipeError, match=r"brainsynth.build\('codebook', \{'name': 'ema'"):
        BaselineVQVAE(channels=8, levels=2, num_res_layers=1, embedding_dim=4, codebook={"name": "ema", "num_embeddings": 8})
    with pytest.raises(brainsynth.RecipeError, match="codebook is a built Codebook"):
        BaselineVQVAE(channels=8, levels=2, num_res_layers=1, embedding_dim=4)


@pytest.mark.slow
def test_importing_the_namespace_imports_no_torch():
    code = "import sys, brainsynth; brainsynth.__version__; brainsynth.RecipeError; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
