"""import-checkpoint for priors: the original's own performer/xtransformer files -> a prior run that samples.

The checkpoints are the golden files under ``tests/data/original_priors/`` (written by the
original code at tiny sizes; see tools/original_golden/). Each test goes the way a user does:
an original ``run_transformer.py`` command line -> ``import-script`` -> ``import-checkpoint --run``
onto an imported tokenizer run -> ``run --mode sample`` / ``likelihood``; the imported prior must
give the original's logits and greedy samples.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)
from test_compat_checkpoint import OriginalBaselineVQVAE

from brainsynth.core.distributed import DistributedContext
from brainsynth.core.plugins import registry
from brainsynth.core.recipe import load_recipe
from brainsynth.core.runner import Run, run_directory
from brainsynth.plugins.tasks.prior.trained import trained_prior

GOLDEN = Path(__file__).parent / "data" / "original_priors"
COHORT_SHAPE = (50, 59, 48)
"""The tiny cohort's volume shape (checked below): the ROI ranges are centred in it."""


def manifest(network: str) -> dict:
    return json.loads((GOLDEN / f"{network}_manifest.json").read_text())


def golden_io(network: str) -> dict:
    return torch.load(GOLDEN / f"{network}_io.pt", map_location="cpu", weights_only=True)


def roi_ranges(grid) -> list[tuple[int, int]]:
    """A centred crop whose size the tiny tokenizer (two stride-2 stages) turns into `grid`."""
    sizes = [4 * g for g in grid]
    return [((full - size) // 2, (full - size) // 2 + size) for full, size in zip(COHORT_SHAPE, sizes)]


def tokenizer_run(tmp_path: Path, cohort: Path, codes: int, grid, name: str) -> Path:
    """An imported tokenizer run: the original baseline_vqvae (tiny) through import-checkpoint --run."""
    torch.manual_seed(7)
    original = OriginalBaselineVQVAE(channels=8, levels=2, res=1, embed_dim=4, n_embed=codes).eval()
    torch.save({"network": {f"module.{k}": v for k, v in original.state_dict().items()}}, tmp_path / f"{name}.pt")
    recipe = tmp_path / f"{name}_vqvae.yaml"
    roi = [list(r) for r in roi_ranges(grid)]
    recipe.write_text(
        "task: tokenizer\n"
        f"experiment: {{name: {name}_tokenizer, root: {tmp_path / 'runs'}}}\n"
        f"data: {{name: nifti, train: {cohort / 'train.tsv'}, val: {cohort / 'val.tsv'}, roi: {roi}, canonical: false}}\n"
        "network:\n  name: baseline_vqvae\n  channels: 8\n  levels: 2\n  num_res_layers: 1\n  embedding_dim: 4\n"
        f"  codebook: {{name: ema, num_embeddings: {codes}, decay: 0.5}}\n"
    )
    return recipe


def conditioning_table(path: Path, cohort: Path, variables: list[dict], seed: int) -> list[str]:
    """A table of every cohort subject (``.nii.gz`` names, as the ADNI table); returns the val subjects."""
    generator = np.random.default_rng(seed)
    subjects = []
    for split in ("train", "val"):
        with open(cohort / f"{split}.tsv", newline="") as handle:
            subjects += [(split, row["subject"]) for row in csv.DictReader(handle, delimiter="\t")]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["subject", *(v["column"] for v in variables)])
        for _, subject in subjects:
            values = [
                int(generator.integers(0, v["levels"])) if v["kind"] == "categorical" else round(float(generator.normal()), 4)
                for v in variables
            ]
            writer.writerow([f"{subject}.nii.gz", *values])
    return [s for split, s in subjects if split == "val"]


def original_script(tmp_path: Path, cohort: Path, config: dict, grid, network: str, table: Path, name: str) -> Path:
    """The original's run_transformer.py inference command line for a golden configuration."""
    options = dict(config["options"])
    if network == "xtransformer":
        options = {{"dim": "n_embd", "depth": "n_layers", "heads": "n_head"}.get(k, k): v for k, v in options.items()}
    options.pop("dim_head", None)  # the original fixed it at 64; the golden performer used 16 (set below)
    order = manifest(network)["ordering"]
    variables = config["variables"]
    flags = {
        "training_subjects": cohort / "train.tsv", "validation_subjects": cohort / "val.tsv",
        "project_directory": f"{tmp_path / 'runs'}/", "experiment_name": name, "mode": "inference",
        "vqvae_checkpoint": tmp_path / f"{name}.pt",
        "vqvae_aug_roi": tuple(roi_ranges(grid)), "vqvae_aug_augmentation_probability": 0.0,
        "network": network, "vocab_size": manifest(network)["vocab_size"], **options,
        "ordering_type": order["ordering_type"], "transpositions_axes": tuple(tuple(a) for a in order["transpositions_axes"]),
        "rot90_axes": tuple(tuple(a) for a in order["rot90_axes"]), "transformation_order": tuple(order["transformation_order"]),
        "conditioning_type": config["conditioning_type"],
    }
    if variables:
        flags["conditioning_path"] = table
        flags["conditionings"] = tuple(v["column"] for v in variables)
        flags["use_continuous_conditioning"] = tuple(v["kind"] == "continuous" for v in variables)
    lines = ["python3 /project/run_transformer.py run \\"]
    lines += [f"  --{key}={shlex.quote(str(value) if isinstance(value, (str, Path)) else repr(value))} \\"
              for key, value in flags.items()]
    path = tmp_path / f"{name}.sh"
    path.write_text("\n".join(lines).rstrip(" \\") + "\n")
    return path


def imported_parts(recipe_path: Path, overrides: list[str]):
    """The prior exactly as --mode sample loads it from the run's best.pt."""
    recipe = load_recipe(recipe_path, registry(), overrides=overrides)
    run = Run(recipe=recipe, directory=run_directory(recipe), registry=registry(), dist=DistributedContext())
    return trained_prior(run, "best")


def as_rows(conditioning, variables: list[dict]) -> list[dict]:
    """The golden [B, K] tensor (or K tensors [B, 1]) -> one raw-value row per batch item."""
    columns = conditioning if isinstance(conditioning, list) else [conditioning[:, k : k + 1] for k in range(conditioning.shape[1])]
    rows = []
    for b in range(columns[0].shape[0] if columns else 0):
        rows.append({v["column"]: (int(c[b, 0]) if v["kind"] == "categorical" else float(c[b, 0])) for v, c in zip(variables, columns)})
    return rows


CASES = [("xtransformer", "ukb"), ("performer", "published")]


@pytest.mark.parametrize(("network", "config_name"), CASES)
def test_original_prior_imports_in_one_command_then_samples_and_scores(network, config_name, tmp_path, run_cli, tiny_cohort):  # noqa: F811
    start = time.perf_counter()
    assert nib.load(str(tiny_cohort / "images" / "sub-0000.nii.gz")).shape == COHORT_SHAPE
    info = manifest(network)
    config = info["configs"][config_name]
    grid, codes = info["grid"], info["vocab_size"]
    name = f"{network}_prior"
    vqvae_recipe = tokenizer_run(tmp_path, tiny_cohort, codes, grid, name)
    imported = run_cli("import-checkpoint", str(tmp_path / f"{name}.pt"), "--recipe", str(vqvae_recipe), "--run")
    assert imported.code == 0, imported
    table = tmp_path / "conditioning.tsv"
    val_subjects = conditioning_table(table, tiny_cohort, config["variables"], seed=1)
    script = original_script(tmp_path, tiny_cohort, config, grid, network, table, name)
    converted = run_cli("import-script", str(script))
    assert converted.code == 0, converted
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(converted.out)
    sizes = ["--set", f"network.dim_head={config['options']['dim_head']}"] if network == "performer" else []

    golden = tmp_path / config["checkpoint"]
    golden.write_bytes((GOLDEN / config["checkpoint"]).read_bytes())
    result = run_cli("import-checkpoint", str(golden), "--recipe", str(recipe), "--run", *sizes)
    assert result.code == 0, result
    run_dir = tmp_path / "runs" / name
    assert f"of the original {network}" in result.out and (run_dir / "checkpoints" / "best.pt").is_file()
    assert (f"{'x'.join(map(str, grid))} grid" in result.out) and f"vocabulary {codes} + BOS" in result.out
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]  # no staging folder left

    # the imported prior computes the original's logits, reading the table's values as the original did
    io = golden_io(network)[config_name]
    parts = imported_parts(recipe, sizes[1:])
    assert parts.grid == tuple(grid) and parts.num_embeddings == codes
    rows = as_rows(io["conditioning"], config["variables"])
    values = parts.values(torch.as_tensor(parts.table.encode_many(rows)), torch.device("cpu"))
    with torch.no_grad():
        logits = parts.network(io["inputs"], values)
    torch.testing.assert_close(logits, io["logits"], rtol=1e-4, atol=1e-4)
    expected_order = io["sequence_ordering"] if "sequence_ordering" in io else golden_io(network)["sequence_ordering"]
    assert torch.equal(parts.ordering.sequence_order.cpu(), torch.as_tensor(expected_order).long())

    # --mode sample as converted: one brain per validation subject, conditioned on its row
    sampled = run_cli("run", str(recipe), "--mode", "sample", *sizes)
    assert sampled.code == 0, sampled
    brains = sorted((run_dir / "samples").glob("sample_*.nii.gz"))
    assert len(brains) == len(val_subjects) == 4
    volume = nib.load(str(brains[0]))
    assert volume.shape == tuple(4 * g for g in grid) and np.isfinite(volume.get_fdata()).all()
    with open(run_dir / "samples" / "samples.csv", newline="") as handle:
        drawn = list(csv.DictReader(handle))
    with open(table, newline="") as handle:
        by_subject = {row["subject"]: row for row in csv.DictReader(handle, delimiter="\t")}
    for row, subject in zip(drawn, val_subjects):
        for v in config["variables"]:
            assert float(row[v["column"]]) == float(by_subject[f"{subject}.nii.gz"][v["column"]])

    # greedy samples with the golden conditions are the original's own greedy samples
    # (the performer through the original's own re-run-the-prefix sampling, which its greedy tokens come from)
    exact = ["--set", "network.sampling_decoder=recompute"] if network == "performer" else []
    greedy = run_cli("run", str(recipe), "--mode", "sample", *sizes, *exact, "--set", "sample.split=null",
                     "--set", f"sample.values={json.dumps(rows)}", "--set", "sample.top_k=1",
                     "--set", "sample.samples_per_condition=1", "--set", "sample.output=greedy")
    assert greedy.code == 0, greedy
    for b in range(len(rows)):
        grid_b = np.load(run_dir / "greedy" / "tokens" / f"sample_{b:05d}.npy")
        np.testing.assert_array_equal(grid_b, io["greedy_grid"][b].numpy())

    scored = run_cli("run", str(recipe), "--mode", "likelihood", *sizes, "--set", "likelihood.splits=[val]")
    assert scored.code == 0, scored
    maps = sorted((run_dir / "likelihood").rglob("*.nii.gz"))
    assert len(maps) >= len(val_subjects)
    # evaluate reads the samples against the real brains (MMD only: MS-SSIM needs volumes of 48+ voxels a side)
    evaluated = run_cli("run", str(recipe), "--mode", "evaluate", *sizes, "--set", "evaluation.metrics=[{name: mmd}]")
    assert evaluated.code == 0, evaluated
    assert math.isfinite(json.loads((run_dir / "metrics.evaluate.json").read_text())["mmd"])
    assert time.perf_counter() - start < 60


def _prior_recipe(tmp_path: Path, cohort: Path, network: str, config_name: str, run_cli) -> tuple[Path, Path, dict]:
    info = manifest(network)
    config = info["configs"][config_name]
    name = f"{network}_prior"
    vqvae_recipe = tokenizer_run(tmp_path, cohort, info["vocab_size"], info["grid"], name)
    assert run_cli("import-checkpoint", str(tmp_path / f"{name}.pt"), "--recipe", str(vqvae_recipe), "--run").code == 0
    table = tmp_path / "conditioning.tsv"
    conditioning_table(table, cohort, config["variables"], seed=1)
    converted = run_cli("import-script", str(original_script(tmp_path, cohort, config, info["grid"], network, table, name)))
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(converted.out)
    return recipe, vqvae_recipe, config


def test_wrong_recipe_kind_and_bad_weights_are_one_line_and_write_nothing(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    recipe, vqvae_recipe, config = _prior_recipe(tmp_path, tiny_cohort, "xtransformer", "ukb", run_cli)
    golden = GOLDEN / config["checkpoint"]
    runs = tmp_path / "runs"
    before = sorted(p.name for p in runs.iterdir())

    def attempt(*args: str) -> str:
        result = run_cli("import-checkpoint", *args)
        assert result.code == 2 and result.err.startswith("error: ") and "Traceback" not in result.err, result
        assert len(result.err.strip().splitlines()) == 1
        assert sorted(p.name for p in runs.iterdir()) == before and not (tmp_path / "out.pt").exists()
        return result.err

    # a prior file with the tokenizer recipe, a tokenizer file with the prior recipe
    err = attempt(str(golden), str(tmp_path / "out.pt"), "--recipe", str(vqvae_recipe))
    assert "an original xtransformer checkpoint (a prior); import it with a prior recipe" in err
    assert "network: original_xtransformer" in err
    err = attempt(str(tmp_path / "xtransformer_prior.pt"), str(tmp_path / "out.pt"), "--recipe", str(recipe))
    assert "an original baseline_vqvae checkpoint; import it with a tokenizer recipe" in err
    # a network that cannot take original weights, and the other original network's file
    err = attempt(str(golden), "--recipe", str(recipe), "--run", "--set", "network={name: xtransformer, dim: 4, depth: 1, heads: 1}")
    assert "network 'xtransformer' cannot take original weights" in err and "original_xtransformer (original xtransformer" in err
    performer = GOLDEN / manifest("performer")["configs"]["published"]["checkpoint"]
    err = attempt(str(performer), "--recipe", str(recipe), "--run")
    assert "an original performer checkpoint imports into network 'performer', not 'original_xtransformer'" in err
    # the original fed raw values: a normalising recipe is refused, not imported into other outputs
    normalising = tmp_path / "normalising.yaml"
    normalising.write_text(recipe.read_text().replace("{column: c0, kind: continuous, normalize: none}",
                                                   "{column: c0, kind: continuous, normalize: minmax}"))
    err = attempt(str(golden), "--recipe", str(normalising), "--run")
    assert "variables 'c0'" in err and "needs normalize: none" in err
    # a tensor of another shape: the key is named, nothing is written
    state = torch.load(golden, map_location="cpu", weights_only=True)
    key = next(k for k in state["network"] if "token_emb" in k)
    state["network"][key] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    err = attempt(str(tmp_path / "bad.pt"), str(tmp_path / "out.pt"), "--recipe", str(recipe), "--run")
    assert key.removeprefix("module.") in err
    # neither network: refused, naming what the file holds
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    err = attempt(str(tmp_path / "other.pt"), "--recipe", str(recipe), "--run")
    assert "not a checkpoint of the original baseline_vqvae, performer or xtransformer" in err and "fc.weight" in err


def test_imported_prior_is_a_runs_best_checkpoint(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    """OUT.pt holds what prior training saves besides the weights: ordering, mapping, grid, vocabulary."""
    recipe, _, config = _prior_recipe(tmp_path, tiny_cohort, "xtransformer", "ukb", run_cli)
    result = run_cli("import-checkpoint", str(GOLDEN / config["checkpoint"]), str(tmp_path / "prior.pt"), "--recipe", str(recipe))
    assert result.code == 0, result
    saved = torch.load(tmp_path / "prior.pt", map_location="cpu", weights_only=True)
    extra = saved["extra"]
    assert saved["task"] == "prior" and extra["grid"] == manifest("xtransformer")["grid"]
    assert extra["num_embeddings"] == manifest("xtransformer")["vocab_size"]
    assert extra["conditioning_table"] == str(tmp_path / "conditioning.tsv")
    mappings = extra["conditioning"]
    assert json.dumps(mappings)  # plain data
    assert extra["imported"]["network"] == "xtransformer" and extra["imported"]["ddp_prefix"] is True
    assert extra["imported"]["tokenizer_run"] == str(tmp_path / "runs" / "xtransformer_prior_tokenizer")
    ordering = torch.as_tensor(golden_io("xtransformer")["sequence_ordering"])
    assert math.prod(extra["grid"]) == ordering.numel()


def _every_config() -> list[tuple[str, str]]:
    return [(network, name) for network in ("xtransformer", "performer") for name in manifest(network)["configs"]]


@pytest.fixture(scope="module")
def tokenizer_runs(tmp_path_factory, tiny_cohort) -> dict[str, Path]:  # noqa: F811
    """One imported tokenizer run per golden manifest (its grid and vocabulary), shared by the configurations."""
    from brainsynth.plugins.compat.checkpoint_import import import_checkpoint

    root = tmp_path_factory.mktemp("tokenizers")
    runs = {}
    for network in ("xtransformer", "performer"):
        info = manifest(network)
        name = f"{network}_prior"
        recipe = load_recipe(tokenizer_run(root, tiny_cohort, info["vocab_size"], info["grid"], name), registry())
        import_checkpoint(root / f"{name}.pt", recipe, registry(), run=True)
        runs[network] = root
    return runs


@pytest.mark.parametrize(("network", "config_name"), _every_config())
def test_every_golden_configuration_converts_and_imports_to_the_originals_logits(network, config_name, tmp_path, run_cli,
                                                                                 tokenizer_runs, tiny_cohort):  # noqa: F811
    """Each original configuration, through import-script and import-checkpoint, computes the original's logits."""
    from brainsynth.plugins.compat.checkpoint_import import import_checkpoint

    info = manifest(network)
    config = info["configs"][config_name]
    root = tokenizer_runs[network]
    name = f"{network}_prior"
    table = tmp_path / "conditioning.tsv"
    conditioning_table(table, tiny_cohort, config["variables"], seed=2)
    script = original_script(tmp_path, tiny_cohort, config, info["grid"], network, table, name)
    converted = run_cli("import-script", str(script))
    assert converted.code == 0, converted
    recipe_path = tmp_path / f"{name}.yaml"
    recipe_path.write_text(converted.out)
    overrides = [f"tokenizer.run={root / 'runs' / f'{name}_tokenizer'}"]
    if network == "performer":
        overrides.append(f"network.dim_head={config['options']['dim_head']}")
    recipe = load_recipe(recipe_path, registry(), overrides=overrides)
    report = import_checkpoint(GOLDEN / config["checkpoint"], recipe, registry(), out=tmp_path / "prior.pt")
    assert report.kind == network

    parts = imported_parts_from(recipe, tmp_path / "prior.pt")
    io = golden_io(network)[config_name]
    values = None
    if config["variables"] and config["conditioning_type"] != "none":
        rows = as_rows(io["conditioning"], config["variables"])
        values = parts.values(torch.as_tensor(parts.table.encode_many(rows)), torch.device("cpu"))
    with torch.no_grad():
        logits = parts.network(io["inputs"], values)
    torch.testing.assert_close(logits, io["logits"], rtol=1e-5, atol=1e-5)


def imported_parts_from(recipe, checkpoint: Path):
    """The prior as the run modes restore it from a checkpoint file (ordering, mapping, then weights)."""
    from brainsynth.core.checkpoint import load_checkpoint, read_checkpoint
    from brainsynth.library.prior_assembly import build_prior_parts

    run = Run(recipe=recipe, directory=run_directory(recipe), registry=registry(), dist=DistributedContext())
    parts = build_prior_parts(run, saved=read_checkpoint(checkpoint)["extra"])
    load_checkpoint(checkpoint, task="transformer", modules={"network": parts.network}, restore_rng=False)
    parts.network.eval()
    return parts


def test_categorical_values_must_be_the_originals_embedding_rows(tmp_path, run_cli, tokenizer_runs, tiny_cohort):  # noqa: F811
    """The original indexed its embedding with the value itself: values 1..3 would read other rows."""
    from brainsynth.core.errors import CheckpointError
    from brainsynth.plugins.compat.checkpoint_import import import_checkpoint

    info = manifest("xtransformer")
    config = info["configs"]["bos_replacement"]
    assert any(v["kind"] == "categorical" for v in config["variables"])
    table = tmp_path / "conditioning.tsv"
    conditioning_table(table, tiny_cohort, config["variables"], seed=2)
    lines = table.read_text().splitlines()
    column = [v["column"] for v in config["variables"]].index("group") + 1
    shifted = [lines[0]] + ["\t".join(str(int(f) + 1) if i == column else f for i, f in enumerate(line.split("\t")))
                            for line in lines[1:]]
    table.write_text("\n".join(shifted) + "\n")
    script = original_script(tmp_path, tiny_cohort, config, info["grid"], "xtransformer", table, "xtransformer_prior")
    converted = run_cli("import-script", str(script))
    (tmp_path / "prior.yaml").write_text(converted.out)
    root = tokenizer_runs["xtransformer"]
    recipe = load_recipe(tmp_path / "prior.yaml", registry(),
                         overrides=[f"tokenizer.run={root / 'runs' / 'xtransformer_prior_tokenizer'}"])
    with pytest.raises(CheckpointError, match=r"categorical variable 'group' has training values 1, 2, 3.*0\.\.count-1"):
        import_checkpoint(GOLDEN / config["checkpoint"], recipe, registry(), out=tmp_path / "prior.pt")
    assert not (tmp_path / "prior.pt").exists()
