"""import-checkpoint: original baseline_vqvae weights -> a brainsynth tokenizer, exactly.

The original code is not installed here, so `OriginalBaselineVQVAE` below re-implements its
forward pass from the reference (§2.1, §2.6): module layout (hence state-dict keys), the
quantiser's twice-registered code vectors, distances ``|x|^2 - 2 x.e + |e|^2`` with the arg-max of
their negation, and the decoder. Imported weights must give its tokens and reconstruction.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import brainsynth
import torch.nn.functional as F
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from torch import nn

from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint
from brainsynth.core.errors import CheckpointError
from brainsynth.core.plugins import registry
from brainsynth.core.recipe import load_recipe
from brainsynth.plugins.compat.checkpoint_import import import_checkpoint
from brainsynth.library.original_weights import map_original_state_dict

MANIFEST = Path(__file__).parent / "data" / "original_vqvae_state_dict.tsv"
TINY = {"channels": 8, "levels": 2, "res": 1, "embed_dim": 4, "n_embed": 16}


# -- the original network, re-implemented from the reference -----------------------------------
class _Residual(nn.Sequential):
    def __init__(self, width: int) -> None:
        super().__init__(nn.Conv3d(width, width, 3, padding=1), nn.ReLU(), nn.Dropout3d(0.0), nn.Conv3d(width, width, 1))

    def forward(self, x):
        return F.relu(x + super().forward(x))


class _QuantizerImpl(nn.Module):
    def __init__(self, n_embed: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, dim)
        self.embedding.weight.requires_grad = False
        self.weight = self.embedding.weight  # the same Parameter, registered a second time
        self.register_buffer("N", torch.zeros(n_embed))
        self.register_buffer("embed_avg", self.weight.data.clone())

    def forward(self, x):
        b, c, *grid = x.shape
        flat = x.permute(0, 2, 3, 4, 1).reshape(-1, c)
        distances = (flat**2).sum(1, keepdim=True) - 2 * flat @ self.weight.t() + (self.weight**2).sum(1, keepdim=True).t()
        index = torch.max(-distances, dim=1)[1].view(b, *grid)
        return self.embedding(index).permute(0, 4, 1, 2, 3), index


class _Quantizer(nn.Module):
    def __init__(self, n_embed: int, dim: int) -> None:
        super().__init__()
        self.impl = _QuantizerImpl(n_embed, dim)


class OriginalBaselineVQVAE(nn.Module):
    """The original's eval-mode forward: encoder.0 -> quantizer.0.impl -> decoder.0 (4x4x4 stride-2 stages)."""

    def __init__(self, channels: int, levels: int, res: int, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        half, enc = channels // 2, []
        for i in range(levels):
            width = channels if i == levels - 1 else half
            enc += [nn.Conv3d(1 if i == 0 else half, width, 4, 2, 1), nn.ReLU(), nn.Sequential(*[_Residual(width) for _ in range(res)])]
        enc.append(nn.Conv3d(channels, embed_dim, 3, padding=1))
        dec = [nn.Conv3d(embed_dim, channels, 3, padding=1)]
        for i in range(levels):
            width = channels if i == 0 else half
            dec += [nn.Sequential(*[_Residual(width) for _ in range(res)]),
                    nn.ConvTranspose3d(width, 1 if i == levels - 1 else half, 4, 2, 1, 0)]
            if i != levels - 1:
                dec.append(nn.ReLU())
        self.encoder = nn.ModuleList([nn.Sequential(*enc)])
        self.quantizer = nn.ModuleList([_Quantizer(n_embed, embed_dim)])
        self.decoder = nn.ModuleList([nn.Sequential(*dec)])

    @torch.no_grad()
    def tokens_and_reconstruction(self, x):
        quantized, index = self.quantizer[0].impl(self.encoder[0](x))
        return index, self.decoder[0](quantized)


def original_model(seed: int = 0) -> OriginalBaselineVQVAE:
    torch.manual_seed(seed)
    model = OriginalBaselineVQVAE(**TINY).eval()
    with torch.no_grad():  # trained-looking codes (spread over the encoder's outputs) and EMA statistics
        encoded = model.encoder[0](torch.rand(1, 1, 16, 24, 16)).permute(0, 2, 3, 4, 1).reshape(-1, TINY["embed_dim"])
        impl = model.quantizer[0].impl
        impl.weight.copy_(encoded[torch.randperm(len(encoded))[: TINY["n_embed"]]] + 0.01 * torch.randn(TINY["n_embed"], TINY["embed_dim"]))
        impl.N.uniform_(0, 5)
        impl.embed_avg.normal_()
    return model


def training_dict(model: nn.Module, ddp: bool = True) -> dict:
    """The original's checkpoint: network (DDP 'module.' prefix), Adam, ExponentialLR, ignite trainer state."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.decoder[0][0].weight.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99999)
    network = {("module." if ddp else "") + k: v for k, v in model.state_dict().items()}
    return {"network": network, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
            "trainer": {"epoch_length": 10, "max_epochs": 351, "iteration": 3510}}


def tiny_recipe(path: Path, cohort: Path, root: Path, name: str = "imported", roi="[16, 24, 16]") -> Path:
    path.write_text(
        "task: tokenizer\n"
        f"experiment: {{name: {name}, root: {root}}}\n"
        f"data: {{name: nifti, train: {cohort / 'train.tsv'}, val: {cohort / 'val.tsv'}, roi: {roi}}}\n"
        "network:\n  name: baseline_vqvae\n  channels: 8\n  levels: 2\n  num_res_layers: 1\n  embedding_dim: 4\n"
        "  codebook: {name: ema, num_embeddings: 16, decay: 0.5}\n"
        "loss: {name: mse}\n"
    )
    return path


def manifest_rows() -> list[dict[str, str]]:
    with open(MANIFEST, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def shape_of(row) -> tuple[int, ...]:
    return tuple(int(s) for s in row["shape"].split("x"))


# -- tests ----------------------------------------------------------------------------------------
def test_imported_network_gives_the_original_tokens_and_reconstruction(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    original = original_model()
    torch.save(training_dict(original), tmp_path / "original.pt")
    recipe = tiny_recipe(tmp_path / "tok.yaml", tiny_cohort, tmp_path / "runs")
    result = run_cli("import-checkpoint", str(tmp_path / "original.pt"), str(tmp_path / "out.pt"), "--recipe", str(recipe))
    assert result.code == 0, result
    assert "DDP module. prefix stripped" in result.out and "optimizer, lr_scheduler, trainer" in result.out

    network = brainsynth.build("tokenizer", {"name": "baseline_vqvae", "channels": 8, "levels": 2, "num_res_layers": 1,
                                          "embedding_dim": 4, "codebook": {"name": "ema", "num_embeddings": 16}})
    state = load_checkpoint(tmp_path / "out.pt", task="tokenizer", modules={"network": network}, restore_rng=False)
    network.eval()
    assert state["extra"]["space"]["spatial_shape"] == [16, 24, 16] and len(state["extra"]["space"]["affine"]) == 4
    torch.manual_seed(1)
    x = torch.rand(2, 1, 16, 24, 16)
    expected_tokens, expected_recon = original.tokens_and_reconstruction(x)
    with torch.no_grad():
        tokens = network.encode_tokens(x)
        recon = network.decode_tokens(tokens)
        out = network(x)
    assert len(torch.unique(expected_tokens)) > 3  # a meaningful comparison, not one code everywhere
    assert torch.equal(tokens, expected_tokens) and torch.equal(out.tokens, expected_tokens)
    torch.testing.assert_close(recon, expected_recon, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.reconstruction, expected_recon, rtol=1e-5, atol=1e-6)
    impl = original.quantizer[0].impl
    assert torch.equal(network.codebook.cluster_size, impl.N) and torch.equal(network.codebook.embed_avg, impl.embed_avg)


def test_import_run_then_extract_and_decode(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    original = original_model(seed=2)
    torch.save(original.state_dict(), tmp_path / "weights.pt")  # the bare state_dict form
    recipe = tiny_recipe(tmp_path / "tok.yaml", tiny_cohort, tmp_path / "runs")
    result = run_cli("import-checkpoint", str(tmp_path / "weights.pt"), "--recipe", str(recipe), "--run")
    assert result.code == 0, result
    run_dir = tmp_path / "runs" / "imported"
    assert (run_dir / "recipe.yaml").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no staging left behind

    assert run_cli("run", str(recipe), "--mode", "extract", "--set", "outputs.splits=[val]").code == 0
    grids = sorted((run_dir / "tokens" / "val").glob("*.npy"))
    assert len(grids) == 4
    data = registry().build("dataset", load_recipe(recipe, registry())["data"])
    item = next(i for i in data.split("val") if i["subject"] == grids[0].stem)
    expected, _ = original.tokens_and_reconstruction(item["image"].as_tensor()[None])
    np.testing.assert_array_equal(np.load(grids[0]), expected[0].numpy())

    assert run_cli("run", str(recipe), "--mode", "decode").code == 0
    decoded = sorted((run_dir / "decoded" / "val").glob("*.nii.gz"))
    assert len(decoded) == 4
    meta = json.loads((run_dir / "tokens" / "val" / "tokens.json").read_text())
    assert meta["grid"] == [4, 6, 4] and meta["num_embeddings"] == 16

    from brainsynth.library.trained_tokenizer import load_tokenizer  # what a prior's sample mode decodes through

    frozen = load_tokenizer(run_dir, "best", registry(), torch.device("cpu"))
    assert frozen.grid() == (4, 6, 4) and not frozen.network.training and frozen.affine is not None

    again = run_cli("import-checkpoint", str(tmp_path / "weights.pt"), "--recipe", str(recipe), "--run")
    assert again.code == 2 and "already exists" in again.err and "never overwrites a run" in again.err


def test_manifest_state_dict_imports_round_trips_and_runs(tmp_path, run_cli):
    """The paper configuration (28,189,473 parameters), random values for every manifest key."""
    rows = manifest_rows()
    generator = torch.Generator().manual_seed(0)
    state = {row["key"]: torch.randn(shape_of(row), generator=generator) * 0.02 for row in rows}
    state["quantizer.0.impl.weight"] = state["quantizer.0.impl.embedding.weight"]  # one tensor, twice
    state["quantizer.0.impl.N"] = state["quantizer.0.impl.N"].abs()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "paper.pt")
    recipe = tmp_path / "paper.yaml"
    recipe.write_text(
        "task: tokenizer\n"
        f"experiment: {{name: paper, root: {tmp_path / 'runs'}}}\n"
        f"data: {{name: nifti, train: {tmp_path / 'absent.tsv'}, roi: [16, 16, 16]}}\n"
        "network: {name: baseline_vqvae, codebook: {name: ema, num_embeddings: 2048, decay: 0.5}}\n"
    )
    start = time.perf_counter()
    result = run_cli("import-checkpoint", str(tmp_path / "paper.pt"), str(tmp_path / "paper_out.pt"), "--recipe", str(recipe))
    assert result.code == 0, result
    assert "28,189,473 parameters" in result.out and "from data.roi" in result.out
    saved = read_checkpoint(tmp_path / "paper_out.pt")
    ours = saved["modules"]["network"]
    assert len(ours) == len(rows) - 1  # every key but the code-vector alias
    for row in rows:
        key = row["key"]
        if key == "quantizer.0.impl.weight":
            continue
        name = {"quantizer.0.impl.embedding.weight": "codebook.embedding.weight", "quantizer.0.impl.N": "codebook.cluster_size",
                "quantizer.0.impl.embed_avg": "codebook.embed_avg"}.get(key, key.replace("coder.0.", "coder.", 1))
        assert torch.equal(ours[name], state[key]), key
    network = registry().build("tokenizer", load_recipe(recipe, registry())["network"])
    load_checkpoint(tmp_path / "paper_out.pt", task="tokenizer", modules={"network": network}, restore_rng=False)
    with torch.no_grad():
        out = network.eval()(torch.rand(1, 1, 16, 16, 16))
    assert out.reconstruction.shape == (1, 1, 16, 16, 16) and out.tokens.shape == (1, 1, 1, 1)
    assert torch.isfinite(out.reconstruction).all()
    assert time.perf_counter() - start < 30


def test_every_manifest_key_is_consumed_and_none_is_missing():
    rows = manifest_rows()
    original = {row["key"]: torch.empty(shape_of(row), device="meta") for row in rows}
    with torch.device("meta"):
        ours = brainsynth.build("tokenizer", {"name": "baseline_vqvae", "codebook": {"name": "ema", "num_embeddings": 2048, "decay": 0.5}}).state_dict()
    mapped = map_original_state_dict(original, ours)
    assert set(mapped) == set(ours) and len(mapped) == len(rows) - 1
    assert sum(v.numel() for k, v in mapped.items() if k not in ("codebook.cluster_size", "codebook.embed_avg")) == 28_189_473

    for dropped in ("decoder.0.11.bias", "encoder.0.5.2.3.weight", "quantizer.0.impl.N"):
        partial = {k: v for k, v in original.items() if k != dropped}
        with pytest.raises(CheckpointError, match="has no value for"):
            map_original_state_dict(partial, ours)
    with pytest.raises(CheckpointError, match=r"'encoder\.0\.13\.weight'.*has no place"):
        map_original_state_dict({**original, "encoder.0.13.weight": torch.empty(1, device="meta")}, ours)
    wrong = {**original, "encoder.0.12.weight": torch.empty(16, 256, 3, 3, 3, device="meta")}
    with pytest.raises(CheckpointError, match=r"'encoder\.0\.12\.weight' has shape \[16, 256, 3, 3, 3\].*expects \[32, 256, 3, 3, 3\]"):
        map_original_state_dict(wrong, ours)
    with pytest.raises(CheckpointError, match="quantizer.1.impl.N"):
        map_original_state_dict({**original, "quantizer.1.impl.N": torch.empty(2048, device="meta")}, ours)


def test_clear_errors_and_nothing_written(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    recipe = tiny_recipe(tmp_path / "tok.yaml", tiny_cohort, tmp_path / "runs")
    out = tmp_path / "out.pt"

    def attempt(payload) -> str:
        torch.save(payload, tmp_path / "in.pt")
        result = run_cli("import-checkpoint", str(tmp_path / "in.pt"), str(out), "--recipe", str(recipe), "--run")
        assert result.code == 2 and result.err.startswith("error: ") and "Traceback" not in result.err
        assert not out.exists() and not (tmp_path / "runs").exists()
        return result.err

    assert "not a checkpoint of the original baseline_vqvae" in attempt({"fc.weight": torch.zeros(2, 2)})
    assert "not a checkpoint of the original BrainSynth" in attempt({"epoch": 3, "model": "resnet"})
    assert "pickled Python objects (argparse.Namespace)" in attempt({"network": {}, "config": argparse.Namespace(lr=1)})
    wrong = original_model().state_dict()
    wrong["decoder.0.0.weight"] = torch.zeros(8, 5, 3, 3, 3)
    assert "'decoder.0.0.weight' has shape [8, 5, 3, 3, 3]" in attempt(wrong)
    alias = original_model().state_dict()
    alias["quantizer.0.impl.weight"] = alias["quantizer.0.impl.weight"] + 1
    assert "'quantizer.0.impl.weight' and 'quantizer.0.impl.embedding.weight' differ" in attempt(alias)
    transformer = {"token_emb.emb.weight": torch.zeros(5, 4), "attn_layers.layers.0.1.to_out.weight": torch.zeros(4, 4),
                   "attn_layers.layers.0.1.to_out.bias": torch.ones(4), "attn_layers.rotary_pos_emb.inv_freq": torch.ones(2)}
    err = attempt(transformer)  # an original prior given with a tokenizer recipe: which recipe it needs
    assert "an original xtransformer checkpoint (a prior); import it with a prior recipe" in err
    assert "network: original_xtransformer" in err
    err = attempt({"module.performer.net.layers.0.0.fn.fn.to_q.weight": torch.zeros(4, 4), "module.token_emb.weight": torch.zeros(5, 4)})
    assert "an original performer checkpoint (a prior)" in err and "network: performer" in err

    numpy_scalar = training_dict(original_model(), ddp=False)
    numpy_scalar["trainer"]["seed"] = np.int64(12)
    torch.save(numpy_scalar, tmp_path / "np.pt")
    result = run_cli("import-checkpoint", str(tmp_path / "np.pt"), str(out), "--recipe", str(recipe))
    assert result.code == 0, result
    assert "pickled numpy data read by name" in result.out and "scalar" in result.out
    exists = run_cli("import-checkpoint", str(tmp_path / "np.pt"), str(out), "--recipe", str(recipe))
    assert exists.code == 2 and "never overwrites a checkpoint" in exists.err
    again = run_cli("import-checkpoint", str(out), str(tmp_path / "o2.pt"), "--recipe", str(recipe))
    assert again.code == 2 and "already a brainsynth checkpoint" in again.err


def test_recipe_must_match_the_original_network(tmp_path, tiny_cohort):  # noqa: F811
    torch.save(original_model().state_dict(), tmp_path / "w.pt")
    recipe = tiny_recipe(tmp_path / "tok.yaml", tiny_cohort, tmp_path / "runs")
    deeper = load_recipe(recipe, registry(), overrides=["network.levels=3"])
    with pytest.raises(CheckpointError, match=r"original key 'encoder\.0\.3\.weight' has shape \[8, 4, 4, 4, 4\]"):
        import_checkpoint(tmp_path / "w.pt", deeper, registry(), out=tmp_path / "x.pt")
    wider = load_recipe(recipe, registry(), overrides=["network.num_res_layers=2"])
    with pytest.raises(CheckpointError, match="has no value for 'encoder.2.1.0.weight'"):
        import_checkpoint(tmp_path / "w.pt", wider, registry(), out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
