"""import-script: the original's four published experiment scripts -> recipes that validate.

The UKB scripts are the published command lines (reference §8); the ADNI ones are derived from
them by the differences §8.1/§8.2 list (paths, name, epochs; width, depth, dropouts, batch,
evaluation, augmentation conditioning, ZeRO, weighted sampling).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from _data_fixtures import tiny_cohort  # noqa: F401  (fixture)

UKB_VQVAE = r'''python3 /project/run_vqvae.py run \
  --training_subjects='/path/to/ukb/training_samples.csv' \
  --validation_subjects='/path/to/ukb/validation_samples.csv' \
  --load_nii_canonical=False \
  --project_directory='/results/' \
  --experiment_name='ukb_vqvae' \
  --mode='training' \
  --device='ddp' \
  --distributed_port=29500 \
  --amp=True \
  --deterministic=False \
  --cuda_benchmark=True \
  --seed=4 \
  --epochs=351 \
  --learning_rate=0.000165 \
  --gamma=0.99999 \
  --log_every=1 \
  --checkpoint_every=1 \
  --checkpoint_loading_strict=True \
  --eval_every=1 \
  --loss='jukebox_perceptual' \
  --adversarial_component=True \
  --discriminator_network='baseline_discriminator' \
  --discriminator_learning_rate=5e-05 \
  --discriminator_loss='least_square' \
  --generator_loss='least_square' \
  --initial_factor_value=0 \
  --initial_factor_steps=25 \
  --max_factor_steps=50 \
  --max_factor_value=5 \
  --batch_size=8 \
  --normalize=True \
  --roi='((16,176), (16,240),(96,256))' \
  --eval_batch_size=8 \
  --num_workers=8 \
  --prefetch_factor=8 \
  --starting_epoch=0 \
  --network='baseline_vqvae' \
  --use_subpixel_conv=False \
  --use_slim_residual=True \
  --no_levels=4 \
  --downsample_parameters='((4,2,1,1),(4,2,1,1),(4,2,1,1),(4,2,1,1))' \
  --upsample_parameters='((4,2,1,0,1),(4,2,1,0,1),(4,2,1,0,1),(4,2,1,0,1))' \
  --no_res_layers=3 \
  --no_channels=256 \
  --codebook_type='ema' \
  --num_embeddings='(2048,)' \
  --embedding_dim='(32,)' \
  --decay='(0.5,)' \
  --commitment_cost='(0.25,)' \
  --max_decay_epochs=100 \
  --dropout=0.0 \
  --act='RELU'
'''

UKB_TRANSFORMER = r'''python3 /project/run_transformer.py run \
  --training_subjects='/path/to/training_samples.csv' \
  --validation_subjects='/path/to/validation_samples.csv' \
  --conditioning_path='/path/to/conditioning.tsv' \
  --conditionings='(\"25004-2.0\", \"31-0.0\", \"21003-2.0\", \"25009-2.0\")' \
  --project_directory='/results/' \
  --experiment_name='ukb_transformer' \
  --mode='training' \
  --deterministic=False \
  --cuda_benchmark=False \
  --cuda_enable=True \
  --use_zero=True \
  --device='ddp' \
  --seed=4 \
  --epochs=500 \
  --learning_rate=0.0005 \
  --gamma='auto' \
  --log_every=1 \
  --checkpoint_every=1 \
  --eval_every=0 \
  --weighted_sampling=True \
  --batch_size=2 \
  --eval_batch_size=2 \
  --num_workers=16 \
  --prefetch_factor=16 \
  --vqvae_checkpoint='/path/to/ukb/vqvae/file.pt' \
  --vqvae_aug_conditionings='none' \
  --vqvae_aug_load_nii_canonical=False \
  --vqvae_aug_augmentation_probability=0.00 \
  --vqvae_aug_augmentation_strength=0.0 \
  --vqvae_aug_normalize=True \
  --vqvae_aug_roi='((16,176), (16,240),(96,256))' \
  --vqvae_network='baseline_vqvae' \
  --vqvae_net_level=0 \
  --vqvae_net_use_subpixel_conv=False \
  --vqvae_net_use_slim_residual=True \
  --vqvae_net_no_levels=4 \
  --vqvae_net_downsample_parameters='((4,2,1,1),(4,2,1,1),(4,2,1,1),(4,2,1,1))' \
  --vqvae_net_upsample_parameters='((4,2,1,0,1),(4,2,1,0,1),(4,2,1,0,1),(4,2,1,0,1))' \
  --vqvae_net_no_res_layers=3 \
  --vqvae_net_no_channels=256 \
  --vqvae_net_codebook_type='ema' \
  --vqvae_net_num_embeddings='(2048,)' \
  --vqvae_net_embedding_dim='(32,)' \
  --vqvae_net_embedding_init='(\"normal\",)' \
  --vqvae_net_commitment_cost='(0.25, )' \
  --vqvae_net_decay='(0.5,)' \
  --vqvae_net_dropout=0.0 \
  --vqvae_net_act='RELU'\
  --starting_epoch=0 \
  --ordering_type='raster_scan' \
  --transpositions_axes='((2, 0, 1),)' \
  --rot90_axes='((0, 1),)' \
  --transformation_order='(\"rotate_90\", \"transpose\")' \
  --network='xtransformer' \
  --vocab_size=2048 \
  --n_embd=1024 \
  --n_layers=36 \
  --n_head=16 \
  --tie_embedding=False \
  --ff_glu=False \
  --emb_dropout=0.001 \
  --ff_dropout=0.001 \
  --attn_dropout=0.001 \
  --use_rezero=False \
  --position_emb='rotary' \
  --conditioning_type='cross_attend' \
  --use_continuous_conditioning='(True, True, True, True)' \
  --local_attn_heads=8 \
  --local_window_size=420 \
  --feature_redraw_interval=1 \
  --generalized_attention=False \
  --use_rmsnorm=True \
  --attn_talking_heads=False \
  --attn_on_attn=False \
  --attn_gate_values=True \
  --sandwich_norm=False \
  --rel_pos_bias=False \
  --use_qk_norm_attn=False \
  --spatial_rel_pos_bias=True \
  --bucket_values=False \
  --shift_mem_down=1
'''


def adni_vqvae() -> str:
    script = UKB_VQVAE.replace("/path/to/ukb/", "/path/to/adni/").replace("ukb_vqvae", "adni_vqvae")
    return script.replace("--epochs=351", "--epochs=451")


def adni_transformer() -> str:
    script = UKB_TRANSFORMER
    for old, new in (
        (r"\"25004-2.0\", \"31-0.0\", \"21003-2.0\", \"25009-2.0\"", r"\"age\", \"PTGENDER\", \"pathology\""),
        ("ukb_transformer", "adni_transformer"),
        ("--cuda_benchmark=False \\\n  --cuda_enable=True \\\n  --use_zero=True", "--cuda_benchmark=True"),
        ("--eval_every=0 \\\n  --weighted_sampling=True", "--eval_every=1"),
        ("--batch_size=2", "--batch_size=3"),
        ("--eval_batch_size=2", "--eval_batch_size=3"),
        ("/path/to/ukb/vqvae/", "/path/to/adni/vqvae/"),
        ("--vqvae_aug_conditionings='none'", "--vqvae_aug_conditionings='continuous'"),
        ("--vqvae_aug_augmentation_probability=0.00", "--vqvae_aug_augmentation_probability=0.20"),
        ("--n_embd=1024", "--n_embd=512"),
        ("--n_layers=36", "--n_layers=24"),
        ("_dropout=0.001", "_dropout=0.1"),
        ("(True, True, True, True)", "(True, True, True)"),
    ):
        assert old in script, old
        script = script.replace(old, new)
    return script


PUBLISHED = {"ukb_vqvae": UKB_VQVAE, "adni_vqvae": adni_vqvae(), "ukb_transformer": UKB_TRANSFORMER,
             "adni_transformer": adni_transformer()}


def convert(run_cli, tmp_path: Path, name: str, script: str):
    path = tmp_path / f"{name}.sh"
    path.write_text(script)
    result = run_cli("import-script", str(path))
    (tmp_path / f"{name}.yaml").write_text(result.out)
    return result, tmp_path / f"{name}.yaml"


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_scripts_convert_into_recipes_that_validate(name, run_cli, tmp_path):
    result, recipe_path = convert(run_cli, tmp_path, name, PUBLISHED[name])
    assert result.code == 0, result
    validated = run_cli("validate", str(recipe_path))
    assert validated.code == 0, validated
    recipe = yaml.safe_load(result.out)
    assert recipe["experiment"] == {"name": name, "root": "/results"}
    if name.endswith("vqvae"):
        assert "--checkpoint_loading_strict was refused by the original" in result.err
        assert recipe["network"]["codebook"] == {"name": "ema", "num_embeddings": 2048, "decay": 0.5, "commitment_cost": 0.25}
        assert recipe["network"]["channels"] == 256 and recipe["network"]["levels"] == 4
        assert recipe["data"]["roi"] == [[16, 176], [16, 240], [96, 256]]
        assert recipe["train"]["epochs"] == (351 if name.startswith("ukb") else 451)
        assert recipe["optimizer"] == {"lr": 0.000165, "schedule": {"name": "exponential", "gamma": 0.99999}}
        assert recipe["adversarial"]["weight"] == 0.005 and recipe["discriminator_optimizer"]["lr"] == 5e-05
        # inert flags (reference §9.4) are dropped with a comment saying so
        for flag in ("max_decay_epochs=100", "use_slim_residual=True", "initial_factor_steps=25", "seed=4"):
            line = next(line for line in result.out.splitlines() if f"--{flag}" in line)
            assert line.startswith("#") and "inert in the original" in line
    else:
        network = recipe["network"]
        width, depth, dropout = (1024, 36, 0.001) if name.startswith("ukb") else (512, 24, 0.1)
        assert network["name"] == "original_xtransformer"
        assert (network["dim"], network["depth"], network["heads"], network["ff_dropout"]) == (width, depth, 16, dropout)
        assert network["position_emb"] == "rotary" and network["use_rmsnorm"] and network["attn_gate_values"]
        assert network["spatial_rel_pos_bias"] and not network["bucket_values"] and network["spatial_position_emb"] is None
        assert recipe["ordering"] == {"name": "raster_scan", "transpositions_axes": [[2, 0, 1]], "rot90_axes": [[0, 1]],
                                      "transformation_order": ["rotate_90", "transpose"]}
        conditioning = recipe["conditioning"]
        assert conditioning["name"] == "cross_attend"
        assert conditioning["order"] == "last_first" and conditioning["continuous_embedding"] == "tiled"
        columns = [v["column"] for v in conditioning["variables"]]
        assert columns == (["25004-2.0", "31-0.0", "21003-2.0", "25009-2.0"] if name.startswith("ukb")
                           else ["age", "PTGENDER", "pathology"])
        assert all(v["kind"] == "continuous" and v["normalize"] == "none" for v in conditioning["variables"])
        assert recipe["optimizer"]["schedule"] == {"name": "exponential", "final_lr": 1e-05}
        assert recipe["tokenizer"]["run"] == "/results/file_tokenizer"
        assert "brainsynth import-checkpoint /path/to/" in result.out
        shift = next(line for line in result.out.splitlines() if "--shift_mem_down=1" in line)
        assert shift.startswith("#") and "inert in the original" in shift
        # the original skipped subjects without values, and sampled each validation subject once
        assert recipe["train"]["missing"] == "drop"
        assert recipe["sample"] == {"checkpoint": "best", "batch_size": 2 if name.startswith("ukb") else 3,
                                    "temperature": 1.0, "split": "val", "samples_per_condition": 1}
        assert recipe["data"]["val"] == "/path/to/validation_samples.csv"
        if name.startswith("ukb"):
            assert "--cuda_enable was refused by the original" in result.err
            assert recipe["zero"] is True and recipe["train"]["weighted"] is True
            assert recipe["train"]["eval_every"] == 500  # never validated by the original: once, at the end, here
            assert recipe["data"]["augment"] is False
        else:
            assert "--vqvae_aug_conditionings='continuous' is not supported" in result.err
            # the augmentation trace is not a context token here, so augmentation stays off
            assert recipe["data"]["augment"] is False and recipe["data"]["augmentation_probability"] == 0.2
            assert recipe["train"]["eval_every"] == 1


@pytest.mark.parametrize("name", ["ukb", "adni"])
def test_published_scripts_dry_run_at_full_size(name, run_cli, tmp_path):
    """The converted recipes size the paper's models: the tokenizer exactly, the priors as published."""
    _, vqvae = convert(run_cli, tmp_path, f"{name}_vqvae", PUBLISHED[f"{name}_vqvae"])
    _, prior = convert(run_cli, tmp_path, f"{name}_transformer", PUBLISHED[f"{name}_transformer"])
    result = run_cli("run", str(vqvae), "--dry-run")
    assert result.code == 0, result
    summary = json.loads(result.out.strip().splitlines()[-1])
    assert summary["parameters"] == 28_189_473 and summary["token_grid"] == [10, 14, 10]
    result = run_cli("run", str(prior), "--dry-run", "--set", f"tokenizer.recipe={vqvae}")
    assert result.code == 0, result
    summary = json.loads(result.out.strip().splitlines()[-1])
    published = 684e6 if name == "ukb" else 179e6  # reference §4.2 / §8.2
    assert abs(summary["parameters"] - published) / published < 0.005, summary
    assert summary["token_grid"] == [10, 14, 10] and summary["models"]["tokenizer"] == 28_189_473
    assert not (tmp_path / "results").exists()


UKB_COLUMNS = ["25004-2.0", "31-0.0", "21003-2.0", "25009-2.0"]


def published_table(path: Path, cohort: Path, dataset: str) -> list[dict[str, str]]:
    """A conditioning table in the published form; the cohort's last subject has no row (the original skipped it)."""
    rows = list(csv.DictReader(open(cohort / "conditioning.tsv", newline=""), delimiter="\t"))
    oldest = max(float(r["age"]) for r in rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        if dataset == "adni":  # age / max age, PTGENDER 0/1, pathology 0-4 (fed as continuous)
            writer.writerow(["age", "PTGENDER", "pathology", "subject"])
            for i, r in enumerate(rows[:-1]):
                writer.writerow([float(r["age"]) / oldest, r["sex"], i % 5, f"{r['subject']}.nii.gz"])
        else:  # four normalised fields and the weight column that weighted sampling reads
            writer.writerow([*UKB_COLUMNS, "weight", "subject"])
            for i, r in enumerate(rows[:-1]):
                writer.writerow([0.1 * (i % 7), r["sex"], float(r["age"]) / oldest, 0.05 * (i % 11), 1 + i % 2,
                                 f"{r['subject']}.nii.gz"])
    return rows


def data_paths(cohort: Path, runs: Path) -> list[str]:
    return ["--set", f"data.train={cohort / 'train.tsv'}", "--set", f"data.val={cohort / 'val.tsv'}",
            "--set", f"experiment.root={runs}"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["ukb", "adni"])
def test_converted_tokenizer_trains_an_epoch_unedited(dataset, run_cli, tmp_path, tiny_cohort):  # noqa: F811
    """The VQ-VAE scripts, converted, train with only data paths and (for CPU speed) sizes set."""
    result, recipe = convert(run_cli, tmp_path, f"{dataset}_vqvae", PUBLISHED[f"{dataset}_vqvae"])
    assert result.code == 0, result
    sizes = ["--set", "data.roi=[48, 48, 48]", "--set", "network.channels=8", "--set", "network.num_res_layers=1",
             "--set", "network.codebook.num_embeddings=16", "--set", "discriminator.channels=4",
             "--set", "train.epochs=1", "--set", "train.num_workers=0", "--set", "train.batch_size=2"]
    trained = run_cli("run", str(recipe), "--mode", "train", *data_paths(tiny_cohort, tmp_path / "runs"), *sizes)
    assert trained.code == 0, trained
    assert (tmp_path / "runs" / f"{dataset}_vqvae" / "checkpoints" / "best.pt").is_file()


@pytest.mark.parametrize("dataset", ["ukb", "adni"])
def test_converted_prior_trains_an_epoch_and_samples_unedited(dataset, run_cli, tmp_path, tiny_cohort):  # noqa: F811
    """The prior scripts, converted, train and sample with only data paths and (for CPU speed) sizes set."""
    from test_compat_checkpoint import original_model, tiny_recipe

    torch.save(original_model().state_dict(), tmp_path / "vqvae.pt")
    tokenizer_recipe = tiny_recipe(tmp_path / "tok.yaml", tiny_cohort, tmp_path / "runs", name=f"{dataset}_tokenizer")
    assert run_cli("import-checkpoint", str(tmp_path / "vqvae.pt"), "--recipe", str(tokenizer_recipe), "--run").code == 0
    table = tmp_path / f"{dataset}_conditioning.tsv"
    rows = published_table(table, tiny_cohort, dataset)
    name = f"{dataset}_transformer"
    result, recipe = convert(run_cli, tmp_path, name, PUBLISHED[name])
    assert result.code == 0, result
    settings = [
        *data_paths(tiny_cohort, tmp_path / "runs"),
        "--set", f"conditioning.table={table}", "--set", f"tokenizer.run={tmp_path / 'runs' / f'{dataset}_tokenizer'}",
        # sizes, for CPU speed
        "--set", "data.roi=[16, 24, 16]", "--set", "network.dim=8", "--set", "network.depth=1", "--set", "network.heads=1",
        "--set", "train.epochs=1", "--set", "train.num_workers=0",
    ]
    trained = run_cli("run", str(recipe), "--mode", "train", *settings)
    assert trained.code == 0, trained
    run_dir = tmp_path / "runs" / name
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    sampled = run_cli("run", str(recipe), "--mode", "sample", *settings)
    assert sampled.code == 0, sampled
    samples = sorted((run_dir / "samples").glob("sample_*.nii.gz"))
    val_subjects = [r["subject"] for r in csv.DictReader(open(tiny_cohort / "val.tsv", newline=""), delimiter="\t")]
    kept = [s for s in val_subjects if s != rows[-1]["subject"]]
    assert len(samples) == len(kept) >= 3  # one brain per validation subject with values
    drawn = list(csv.DictReader(open(run_dir / "samples" / "samples.csv", newline="")))
    by_subject = {f"{r['subject']}": r for r in csv.DictReader(open(table, newline=""), delimiter="\t")}
    first = "age" if dataset == "adni" else UKB_COLUMNS[0]
    assert [float(d[first]) for d in drawn] == [float(by_subject[f"{s}.nii.gz"][first]) for s in kept]


def test_unknown_flag_is_named(run_cli, tmp_path):
    result, _ = convert(run_cli, tmp_path, "bad", UKB_VQVAE.replace("--dropout=0.0", "--dropuot=0.0"))
    assert result.code == 2 and result.out == ""
    assert "unknown flag --dropuot for run_vqvae.py" in result.err and "Did you mean 'dropout'" in result.err


def test_no_original_command_and_missing_required_flag(run_cli, tmp_path):
    result, _ = convert(run_cli, tmp_path, "empty", "echo hello\n")
    assert result.code == 2 and "no 'run_vqvae.py' or 'run_transformer.py' command line" in result.err
    result, _ = convert(run_cli, tmp_path, "short", "python3 run_vqvae.py run --training_subjects=a.csv --validation_subjects=b.csv --project_directory=/r/")
    assert result.code == 2 and "requires --experiment_name" in result.err


def test_orderings_of_the_original_are_requested_exactly(run_cli, tmp_path):
    deterministic = UKB_TRANSFORMER.replace("--ordering_type='raster_scan'", "--ordering_type='random'").replace(
        "--deterministic=False", "--deterministic=True")
    result, path = convert(run_cli, tmp_path, "random", deterministic)
    assert result.code == 0, result
    assert yaml.safe_load(result.out)["ordering"]["seed"] == 4 and run_cli("validate", str(path)).code == 0
    unseeded = UKB_TRANSFORMER.replace("--ordering_type='raster_scan'", "--ordering_type='random'")
    result, _ = convert(run_cli, tmp_path, "unseeded", unseeded)
    assert result.code == 0 and "order was unseeded and is lost" in result.err
    hilbert = UKB_TRANSFORMER.replace("--ordering_type='raster_scan'", "--ordering_type='hilbert_curve'")
    result, path = convert(run_cli, tmp_path, "hilbert", hilbert)
    assert yaml.safe_load(result.out)["ordering"]["curve"] == "gilbert" and run_cli("validate", str(path)).code == 0


def test_settings_brainsynth_lacks_are_warned_not_dropped_silently(run_cli, tmp_path):
    script = UKB_TRANSFORMER.replace("--attn_talking_heads=False", "--attn_talking_heads=True")
    result, path = convert(run_cli, tmp_path, "talking", script)
    assert result.code == 0 and yaml.safe_load(result.out)["network"]["attn_talking_heads"] is True  # carried over by name
    assert run_cli("validate", str(path)).code == 0
    baur = UKB_VQVAE.replace("--loss='jukebox_perceptual'", "--loss='baur'")
    result, _ = convert(run_cli, tmp_path, "baur", baur)
    assert result.code == 2 and "--loss='baur' has no brainsynth equivalent" in result.err


def test_options_table_covers_every_xtransformer_option():
    from brainsynth.plugins.compat.transformer_import import XTRANSFORMER_OPTIONS, options_table

    options = ("n_embd n_layers n_head vocab_size emb_dropout ff_dropout attn_dropout tie_embedding ff_glu position_emb "
               "spatial_position_emb conditioning_type use_continuous_conditioning use_rmsnorm attn_talking_heads "
               "attn_gate_values attn_on_attn sandwich_coef sandwich_norm rel_pos_bias spatial_rel_pos_bias bucket_values "
               "spatial_bias_max_dist use_qk_norm_attn residual_attn cross_residual_attn gate_residual shift_mem_down "
               "use_rezero local_attn_heads local_window_size feature_redraw_interval generalized_attention use_scalenorm")
    text = " ".join(row.option for row in XTRANSFORMER_OPTIONS)
    assert [o for o in options.split() if o not in text] == []
    table = options_table()
    assert table.count("\n") == len(XTRANSFORMER_OPTIONS) + 1 and "| `position_emb` |" in table
    # the table says what the network does: an option marked 'no' is refused by original_xtransformer
    # when set, one marked 'yes' builds (each option set on its own, at a tiny size)
    from brainsynth.core.errors import RecipeError
    from brainsynth.plugins.orderings.raster_scan import RasterScan
    from brainsynth.plugins.transformers.original_xtransformer import OriginalXTransformerPrior

    settable = {"use_rezero": True, "use_rmsnorm": True, "attn_talking_heads": True, "attn_gate_values": True,
                "attn_on_attn": True, "sandwich_coef": 1, "sandwich_norm": True, "rel_pos_bias": True,
                "spatial_rel_pos_bias": True, "bucket_values": True, "use_qk_norm_attn": True, "residual_attn": True,
                "cross_residual_attn": True, "gate_residual": True, "tie_embedding": True, "ff_glu": True,
                "position_emb": "rotary", "spatial_position_emb": "fixed"}
    checked = 0
    for row in XTRANSFORMER_OPTIONS:
        for option in (o.strip() for o in row.option.split("/")):
            if option not in settable:
                continue
            try:
                OriginalXTransformerPrior(dim=4, depth=2, heads=1, num_tokens=9, ordering=RasterScan(spatial_shape=(2, 2, 2)),
                                          **{option: settable[option]})
                built = True
            except RecipeError:
                built = False
            assert built == row.exact, option
            checked += 1
    assert checked == len(settable)
