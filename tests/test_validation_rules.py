"""Every recipe rule `brainsynth validate` enforces before work starts: one failing recipe per rule.

Each row is a rule: the recipe it breaks (a base recipe and ``--set`` overrides), and what the one
line must say. The recipes are valid without the overrides (first test), so each row fails only
for its own reason.
"""

from __future__ import annotations

import pytest

from brainsynth.core.schema import PositiveInt, Range, check_type, type_name

TOKENIZER = """\
task: tokenizer
experiment: {{name: tok, root: {root}}}
data: {{name: demo_cohort, subjects: 8, spacing: 4.0, roi: [32, 32, 32]}}
network:
  name: baseline_vqvae
  channels: 8
  levels: 2
  num_res_layers: 1
  embedding_dim: 4
  codebook: {{name: ema, num_embeddings: 16}}
loss: {{name: mse}}
optimizer: {{lr: 1.0e-3, schedule: {{name: exponential, final_lr: 1.0e-4}}}}
train: {{epochs: 2, batch_size: 2}}
"""

PRIOR = """\
task: transformer
experiment: {{name: prior, root: {root}}}
data: {{name: tokens, train: {root}/tokens/train}}
network: {{name: xtransformer, dim: 16, depth: 1, heads: 2, attn_dim_head: 8}}
conditioning:
  name: cross_attend
  dropout: 0.2
  variables: [{{column: age}}]
optimizer: {{lr: 1.0e-3}}
train: {{epochs: 2, batch_size: 2}}
sample: {{split: val, guidance_scale: 1.5}}
"""

RULES = [
    # -- numeric ranges declared in the schemas --------------------------------------------------
    ("tokenizer", ["train.epochs=0"], "train.epochs: must be >= 1, got 0"),
    ("tokenizer", ["train.epochs=-1"], "train.epochs: must be >= 1, got -1"),
    ("tokenizer", ["train.batch_size=0"], "train.batch_size: must be >= 1, got 0"),
    ("tokenizer", ["train.eval_every=0"], "train.eval_every: must be >= 1, got 0"),
    ("tokenizer", ["train.log_every=0"], "train.log_every: must be >= 1, got 0"),
    ("tokenizer", ["train.image_every=0"], "train.image_every: must be >= 1, got 0"),
    ("tokenizer", ["train.checkpoint_every=-5"], "train.checkpoint_every: must be >= 0, got -5"),
    ("tokenizer", ["train.num_workers=-1"], "train.num_workers: must be >= 0, got -1"),
    ("tokenizer", ["optimizer.lr=0"], "optimizer.lr: must be > 0, got 0.0"),
    ("tokenizer", ["optimizer.betas=[0.9, 1.5]"], "optimizer.betas.1: must be in [0, 1), got 1.5"),
    ("tokenizer", ["optimizer.weight_decay=-0.1"], "optimizer.weight_decay: must be >= 0, got -0.1"),
    ("tokenizer", ["optimizer.grad_clip=0"], "optimizer.grad_clip: must be > 0, got 0.0"),
    ("tokenizer", ["optimizer.schedule.final_lr=-1"], "optimizer.schedule.final_lr: must be > 0, got -1.0"),
    ("tokenizer", ["optimizer.schedule.final_lr=null", "optimizer.schedule.gamma=1.5"],
     "optimizer.schedule.gamma: must be in (0, 1], got 1.5"),
    ("tokenizer", ["optimizer.schedule.warmup_steps=-1"], "optimizer.schedule.warmup_steps: must be >= 0, got -1"),
    ("tokenizer", ["discriminator_optimizer.lr=-1"], "discriminator_optimizer.lr: must be > 0"),
    ("tokenizer", ["adversarial.weight=-1"], "adversarial.weight: must be >= 0, got -1.0"),
    ("tokenizer", ["adversarial.warmup_epochs=-1"], "adversarial.warmup_epochs: must be >= 0"),
    ("tokenizer", ["adversarial.start_epoch=-1"], "adversarial.start_epoch: must be >= 0"),
    ("tokenizer", ["network.channels=0"], "network.channels: must be >= 1, got 0"),
    ("tokenizer", ["network.embedding_dim=0"], "network.embedding_dim: must be >= 1, got 0"),
    ("tokenizer", ["network.dropout=1.5"], "network.dropout: must be in [0, 1], got 1.5"),
    ("tokenizer", ["network.codebook.num_embeddings=0"], "network.codebook.num_embeddings: must be >= 1, got 0"),
    ("tokenizer", ["network.codebook.decay=1.0"], "network.codebook.decay: must be in [0, 1), got 1.0"),
    ("tokenizer", ["network.codebook.restart_every=0"], "network.codebook.restart_every: must be >= 1, got 0"),
    ("tokenizer", ["network.codebook.commitment_cost=-1"], "network.codebook.commitment_cost: must be >= 0"),
    ("prior", ["network.depth=0"], "network.depth: must be >= 1, got 0"),
    ("prior", ["network.heads=0"], "network.heads: must be >= 1, got 0"),
    ("prior", ["network.attn_dropout=2"], "network.attn_dropout: must be in [0, 1], got 2.0"),
    ("prior", ["conditioning.dropout=1"], "conditioning.dropout: must be in [0, 1), got 1.0"),
    ("prior", ["sample.batch_size=0"], "sample.batch_size: must be >= 1, got 0"),
    ("prior", ["sample.samples_per_condition=0"], "sample.samples_per_condition: must be >= 1, got 0"),
    ("prior", ["sample.num_samples=0"], "sample.num_samples: must be >= 1, got 0"),
    ("prior", ["sample.temperature=0"], "sample.temperature: must be > 0, got 0.0"),
    ("prior", ["sample.top_k=0"], "sample.top_k: must be >= 1, got 0"),
    ("prior", ["sample.top_p=0"], "sample.top_p: must be in (0, 1], got 0.0"),
    ("prior", ["sample.guidance_scale=-1"], "sample.guidance_scale: must be >= 0, got -1.0"),
    ("prior", ["likelihood.batch_size=0"], "likelihood.batch_size: must be >= 1, got 0"),
    # -- rules across the keys of one section ----------------------------------------------------
    ("tokenizer", ["optimizer.schedule.gamma=0.99"],
     "optimizer.schedule: give either gamma or final_lr, not both"),
    ("tokenizer", ["optimizer.schedule.name=constant"],
     "optimizer.schedule.final_lr: unknown key for lr_schedule 'constant'"),
    # -- rules across sections, declared by each task --------------------------------------------
    ("tokenizer", ["adversarial.weight=0.1"], "adversarial.weight > 0 needs a discriminator block"),
    ("tokenizer", ["train.best_metric=psnr", "metrics=[{name: mae}]"],
     "train.best_metric: 'psnr' is not among the metrics (mae)"),
    ("tokenizer", ["train.best_metric=ssim"], "train.best_metric: 'ssim' is not among the metrics (ms_ssim, mae, mse, psnr)"),
    ("tokenizer", ["data.roi=[32, 34, 32]"], "data.roi: 32x34x32 is not divisible by the network's total down-sampling 4"),
    ("prior", ["conditioning.dropout=0"], "sample.guidance_scale 1.5: this prior is trained without conditioning.dropout"),
    ("prior", ["conditioning={name: none}", "sample.guidance_scale=1"],
     "sample.split: this prior is not conditioned on any variable"),
    ("prior", ["conditioning={name: none}", "sample.split=null"],
     "sample.guidance_scale 1.5: this prior is not conditioned"),
    # -- the two metric kinds: per-volume for the tokenizer, set-level for the prior's evaluation --
    ("tokenizer", ["metrics=[{name: mmd}]"], "metrics.0.name: unknown metric 'mmd'"),
    ("prior", ["evaluation.metrics=[{name: mmdd}]"], "evaluation.metrics.0.name: unknown set_metric 'mmdd'. Did you mean 'mmd'?"),
    ("prior", ["evaluation.metrics=[{name: ms_ssim}]"], "evaluation.metrics.0.name: unknown set_metric 'ms_ssim'"),
    ("prior", ["evaluation.metrics=[{name: mmd, bandwidth: 2}]"], "evaluation.metrics.0.bandwidth: unknown key for set_metric 'mmd'"),
    # -- blocks and paths --------------------------------------------------------------------------
    ("tokenizer", ["network=5"], "network: expected a tokenizer block such as {name: ..., ...}, got int"),
    ("tokenizer", ["experiment.name=../x"], "experiment.name"),
    ("prior", ["sample.output=../elsewhere"], "sample.output"),
]


@pytest.fixture
def recipes(tmp_path):
    paths = {}
    for name, text in (("tokenizer", TOKENIZER), ("prior", PRIOR)):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(text.format(root=tmp_path))
    return paths


def test_the_base_recipes_are_valid(recipes, run_cli):
    for path in recipes.values():
        result = run_cli("validate", str(path))
        assert result.code == 0, result.err


@pytest.mark.parametrize("base, overrides, message", RULES, ids=[" ".join(r[1]) for r in RULES])
def test_validate_refuses_each_rule_in_one_line(recipes, run_cli, base, overrides, message):
    args = [arg for override in overrides for arg in ("--set", override)]
    result = run_cli("validate", str(recipes[base]), *args)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.err


def test_a_rule_broken_in_the_file_names_its_line(recipes, run_cli):
    path = recipes["tokenizer"]
    path.write_text(path.read_text().replace("train: {epochs: 2,", "train: {epochs: 0,"))
    result = run_cli("validate", str(path))
    assert result.code == 2 and f"{path}:13: train.epochs: must be >= 1, got 0." in result.err


def test_ranges_show_in_type_names_and_allow_their_bounds():
    assert type_name(PositiveInt) == "int >= 1"
    assert type_name(PositiveInt | None) == "int >= 1 | null"
    from typing import Annotated

    half_open = Annotated[float, Range(gt=0, le=1)]
    assert type_name(half_open) == "float in (0, 1]"
    assert check_type(1, half_open, ("x",)) == 1.0 and check_type(1, PositiveInt, ("x",)) == 1
    assert check_type(None, PositiveInt | None, ("x",)) is None
