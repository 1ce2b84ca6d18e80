"""The paper's recipes validate and size their models with ``run --dry-run`` (no data, no weights)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_token_grids

from brainsynth.core.dry_run import build_without_weights, parameter_count
from brainsynth.core.plugins import registry
from brainsynth.core.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
PAPER_RECIPES = ("ukb_vqvae", "adni_vqvae", "ukb_transformer", "adni_transformer")
REFERENCE_STATE_DICT = Path(__file__).parent / "data" / "original_vqvae_state_dict.tsv"


@pytest.fixture
def at_repo_root(monkeypatch):
    """The paper's prior recipes name their tokenizer recipe relative to the repository root."""
    monkeypatch.chdir(REPO)


def _dry_run(run_cli, *args: str) -> tuple[list[str], dict]:
    result = run_cli("run", *args, "--dry-run")
    assert result.code == 0, result
    lines = result.out.strip().splitlines()
    return lines, json.loads(lines[-1])


def _original_vqvae_parameters() -> int:
    """Parameters of the original's released VQ-VAE: its state dict minus the EMA buffers and the
    second key under which it stores the codebook."""
    total = 0
    with open(REFERENCE_STATE_DICT) as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["key"].endswith((".N", ".embed_avg", ".embedding.weight")):
                continue
            total += math.prod(int(s) for s in row["shape"].split("x"))
    return total


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_paper_recipes_validate_without_their_data(name, at_repo_root, run_cli):
    result = run_cli("validate", f"recipes/{name}.yaml")
    assert result.code == 0, result
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", registry())
    assert recipe["seed"] == 4
    assert "/path/to/" in recipe["data"]["train"]  # placeholders, which need not exist


def test_vqvae_dry_run_matches_the_original_parameter_count(at_repo_root, run_cli):
    for name in ("ukb_vqvae", "adni_vqvae"):
        lines, summary = _dry_run(run_cli, f"recipes/{name}.yaml")
        assert summary["parameters"] == _original_vqvae_parameters() == 28_189_473
        assert summary["token_grid"] == [10, 14, 10]
        assert summary["models"]["discriminator"] > 10_000_000  # the PatchGAN is sized too
        assert any("token grid: 10x14x10 (1400 tokens)" in line for line in lines)


@pytest.mark.parametrize(("name", "paper"), [("ukb_transformer", 684e6), ("adni_transformer", 179e6)])
def test_prior_dry_runs_match_the_published_sizes(name, paper, at_repo_root, run_cli):
    before = sorted(p.name for p in (REPO / "runs").iterdir()) if (REPO / "runs").is_dir() else []
    lines, summary = _dry_run(run_cli, f"recipes/{name}.yaml")
    assert abs(summary["parameters"] - paper) / paper < 0.005, summary
    assert summary["token_grid"] == [10, 14, 10]
    assert summary["models"]["tokenizer"] == 28_189_473
    assert lines[-1].startswith("{") and lines[-1].endswith("}")
    assert any("1400 tokens + BOS" in line for line in lines)
    after = sorted(p.name for p in (REPO / "runs").iterdir()) if (REPO / "runs").is_dir() else []
    assert after == before  # a dry run writes no run directory


def test_dry_run_token_grid_follows_the_roi(at_repo_root, run_cli):
    _, summary = _dry_run(run_cli, "recipes/ukb_vqvae.yaml", "--set", "data.roi=[96, 128, 96]")
    assert summary["token_grid"] == [6, 8, 6]
    result = run_cli("run", "recipes/ukb_vqvae.yaml", "--dry-run", "--set", "data.roi=[100, 128, 96]")
    assert result.code == 2 and "data.roi: 100x128x96 is not divisible by the network's total down-sampling 16" in result.err


@pytest.mark.parametrize(
    "block",
    [
        {"name": "xtransformer", "dim": 32, "depth": 2, "heads": 2, "attn_dim_head": 16, "spatial_rel_pos_bias": True,
         "spatial_pos_emb": True, "use_abs_pos_emb": True, "attn_gate_values": True},
        {"name": "performer", "dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "local_attn_heads": 1,
         "local_window_size": 8, "spatial_pos_emb": True},
    ],
)
def test_every_builtin_prior_builds_without_weights_at_its_real_size(block):
    reg = registry()
    ordering = reg.build("ordering", {"name": "raster_scan"}, spatial_shape=(4, 4, 2))
    variables = [{"column": "age"}, {"column": "sex", "kind": "categorical"}]

    def build():
        conditioning = reg.build("conditioning", {"name": "cross_attend", "variables": variables},
                                 model_dim=32, num_levels={"sex": 2})
        return reg.build("transformer", block, num_tokens=17, ordering=ordering, conditioning=conditioning)

    empty = build_without_weights(build)
    assert {p.device.type for p in empty.parameters()} == {"meta"}
    torch.manual_seed(0)
    assert parameter_count(empty) == parameter_count(build())


def test_prior_dry_run_reads_the_grid_of_extracted_tokens(tmp_path, run_cli):
    tokens = write_token_grids(tmp_path / "tokens", grid=(3, 4, 2), num_embeddings=16)
    table = tmp_path / "cond.tsv"
    table.write_text("subject\tage\tsex\n" + "".join(f"subject{i:02d}\t{50 + i}\t{i % 3}\n" for i in range(6)))
    recipe = tmp_path / "prior.yaml"
    recipe.write_text(
        f"task: transformer\nexperiment: {{name: p, root: {tmp_path / 'runs'}}}\n"
        f"data: {{name: tokens, train: {tokens}}}\n"
        f"conditioning: {{name: cross_attend, table: {table}, variables: [{{column: age}}, {{column: sex, kind: categorical}}]}}\n"
        "network: {name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}\n"
    )
    lines, summary = _dry_run(run_cli, str(recipe))
    assert summary["token_grid"] == [3, 4, 2] and set(summary["models"]) == {"network"}
    without_sex = load_recipe(recipe, registry(), overrides=["conditioning.variables=[{column: age}]"])
    smaller = registry().get("task", "transformer").build({}).dry_run(without_sex, registry())
    # sex has 3 levels in the table: its embedding table is all that the second recipe lacks
    assert summary["parameters"] - smaller.parameters == 3 * 16
    assert not (tmp_path / "runs").exists()


def test_prior_dry_run_without_a_known_grid_says_what_to_set(tmp_path, run_cli):
    recipe = tmp_path / "prior.yaml"
    recipe.write_text(
        f"task: transformer\nexperiment: {{name: p, root: {tmp_path / 'runs'}}}\n"
        "data: {name: nifti, train: /nowhere/train.csv, roi: [32, 32, 32]}\n"
        "network: {name: xtransformer, dim: 16, depth: 1, heads: 2}\n"
    )
    result = run_cli("run", str(recipe), "--dry-run")
    assert result.code == 2 and "set tokenizer.recipe" in result.err
    tokenizer = tmp_path / "tok.yaml"
    tokenizer.write_text(
        f"task: tokenizer\nexperiment: {{name: t, root: {tmp_path / 'runs'}}}\n"
        "data: {name: nifti, train: /nowhere/train.csv, roi: [48, 48, 48]}\n"
        "network: {name: baseline_vqvae, channels: 8, levels: 3, num_res_layers: 1, embedding_dim: 4, "
        "codebook: {name: ema, num_embeddings: 32}}\n"
    )
    _, summary = _dry_run(run_cli, str(recipe), "--set", f"tokenizer.recipe={tokenizer}")
    assert summary["token_grid"] == [4, 4, 4]  # the prior's own ROI, tokenized on the fly
    wrong = run_cli("run", str(recipe), "--dry-run", "--set", f"tokenizer.recipe={recipe}")
    assert wrong.code == 2 and "is a 'transformer' recipe" in wrong.err


def test_a_task_without_dry_run_is_a_clear_error(tmp_path, run_cli):
    recipe = tmp_path / "pipe.yaml"
    recipe.write_text(
        f"task: pipeline\nexperiment: {{name: p, root: {tmp_path / 'runs'}}}\n"
        "stages:\n  - name: a\n    recipe: {task: tokenizer, data: {name: demo_cohort}, network: {name: baseline_vqvae}}\n"
    )
    result = run_cli("run", str(recipe), "--dry-run")
    assert result.code == 2 and "has no --dry-run" in result.err
