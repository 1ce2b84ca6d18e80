"""The third-party plugin package in examples/, installed with pip and found through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from conftest import write_token_grids
from test_transformer_task import TOKENIZER  # the same tiny tokenizer run

pytestmark = pytest.mark.slow  # subprocesses / several processes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "brainsynth-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment where the example package is pip-installed (into its own target folder)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def brainsynth(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "brainsynth", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_listed_by_brainsynth_plugins(plugin_env):
    result = brainsynth(plugin_env, "plugins")
    assert result.returncode == 0, result.stderr
    assert "reverse_raster" in result.stdout
    assert "gru_prior" in result.stdout
    assert "brainsynth-example-plugin (example)" in result.stdout
    assert brainsynth(plugin_env, "example-hello").stdout.strip() == "hello from brainsynth-example-plugin"


def test_not_present_without_installation():
    result = subprocess.run([sys.executable, "-m", "brainsynth", "plugins"], capture_output=True, text=True)
    assert result.returncode == 0 and "gru_prior" not in result.stdout


def test_used_by_a_recipe(plugin_env, tmp_path):
    tokens = write_token_grids(tmp_path / "tokens")
    recipe = tmp_path / "plugin.yaml"
    recipe.write_text(
        "task: transformer\n"
        f"experiment: {{name: with_plugin, root: {tmp_path / 'runs'}}}\n"
        f"data: {{name: tokens, train: {tokens}, val: {tokens}}}\n"
        "ordering: {name: reverse_raster}\n"
        "network: {name: gru_prior, dim: 16}\n"
        "train: {epochs: 1, batch_size: 2}\n"
    )
    result = brainsynth(plugin_env, "run", str(recipe))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "with_plugin" / "checkpoints" / "last.pt").is_file()
    shown = brainsynth(plugin_env, "validate", str(recipe), "--show")
    assert "network: {name: gru_prior, dim: 16, layers: 1, dropout: 0.0}" in shown.stdout


PRIOR = """\
task: transformer
experiment: {{name: gru, root: {root}}}
data: {{name: tokens, train: {tokens}/train, val: {tokens}/val}}
ordering: {{name: reverse_raster}}
conditioning:
  name: cross_attend
  dropout: 0.2
  variables: [{{column: age}}, {{column: sex, kind: categorical}}]
network: {{name: gru_prior, dim: 16}}
optimizer: {{lr: 0.003}}
train: {{epochs: 1, batch_size: 4}}
sample: {{split: val, batch_size: 2, guidance_scale: 1.5, png: false}}
"""


def test_a_conditioned_plugin_prior_trains_samples_scores_and_evaluates(plugin_env, tmp_path, tiny_cohort):  # noqa: F811
    """The example's prior and ordering go through every mode of the prior task, conditioned and guided."""
    tokenizer = tmp_path / "tok.yaml"
    tokenizer.write_text(TOKENIZER.format(root=tmp_path / "runs", cohort=tiny_cohort))
    prior = tmp_path / "gru.yaml"
    prior.write_text(PRIOR.format(root=tmp_path / "runs", tokens=tmp_path / "runs" / "tok" / "tokens"))
    for args in (["run", str(tokenizer)], ["run", str(tokenizer), "--mode", "extract"], ["run", str(prior)],
                 ["run", str(prior), "--mode", "sample"], ["run", str(prior), "--mode", "likelihood"],
                 ["run", str(prior), "--mode", "evaluate", "--set", "evaluation.metrics=[{name: mmd}]"]):
        result = brainsynth(plugin_env, *args)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        assert "cached decoder" not in result.stderr  # it declares its GRU decoder: no recomputation warning
    run = tmp_path / "runs" / "gru"
    assert len(list((run / "samples").glob("sample_*.nii.gz"))) == 4  # one per val subject of the tiny cohort
    assert list((run / "likelihood").glob("*"))
    assert "mmd" in (run / "metrics.evaluate.json").read_text()


def test_the_plugin_prior_s_cached_decoder_gives_the_full_forward_s_logits():
    import sys

    sys.path.insert(0, str(EXAMPLE))
    try:
        from brainsynth_example_plugin.gru_prior import GRUPrior
        from brainsynth_example_plugin.reverse_raster import ReverseRaster
    finally:
        sys.path.remove(str(EXAMPLE))
    from brainsynth.core.ordering import Ordering
    from brainsynth.plugins.conditioning.cross_attend import CrossAttend

    ordering = ReverseRaster(spatial_shape=(2, 3, 2))
    assert isinstance(ordering, Ordering) and ordering.sequence_order.tolist() == list(range(11, -1, -1))
    torch.manual_seed(0)
    conditioning = CrossAttend(variables=[{"column": "age"}], model_dim=16, num_levels={})
    prior = GRUPrior(dim=16, num_tokens=9, max_seq_len=12, ordering=ordering, conditioning=conditioning).eval()
    values = {"age": torch.tensor([0.2, 0.9])}
    tokens = torch.randint(0, 8, (2, 5))
    with torch.no_grad():
        full = prior(torch.cat([torch.full((2, 1), prior.bos_token), tokens], 1), values)
        decoder = prior.decoder(2, values)
        steps = [decoder.start()] + [decoder.step(tokens[:, i]) for i in range(5)]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-6)
    assert prior.has_cached_decoder  # declared, so sampling it does not warn
    assert not torch.allclose(full, prior(torch.cat([torch.full((2, 1), prior.bos_token), tokens], 1),
                                          {"age": torch.tensor([0.9, 0.2])}))  # the condition changes the logits
