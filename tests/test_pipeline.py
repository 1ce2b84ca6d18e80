"""The pipeline task, and the demo recipe run end to end at a tiny size."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from _data_fixtures import TINY_COHORT, tiny_cohort  # noqa: F401  (fixture)

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def tiny_demo(cohort: Path, root: Path) -> dict:
    """recipes/demo.yaml with the same stages and modes, shrunk to seconds."""
    demo = yaml.safe_load(DEMO.read_text())
    demo["experiment"] = {"name": "demo", "root": str(root)}
    tokenizer, prior = (stage["recipe"] for stage in demo["stages"])
    tokenizer["data"].update({**TINY_COHORT, "directory": str(cohort), "roi": [48, 56, 48]})
    tokenizer["network"].update({"channels": 8, "levels": 3, "embedding_dim": 4})
    tokenizer["network"]["codebook"]["num_embeddings"] = 16
    tokenizer["train"].update({"epochs": 1, "batch_size": 4, "eval_every": 1})
    prior["network"].update({"dim": 16, "depth": 1, "heads": 2, "attn_dim_head": 8})
    prior["train"].update({"epochs": 1, "batch_size": 4})  # eval_every stays 5: the last epoch is validated
    prior["sample"].update({"samples_per_condition": 1, "batch_size": 4})  # one brain per val subject: 4
    return demo


def test_demo_recipe_validates(run_cli):
    result = run_cli("validate", str(DEMO))
    assert result.code == 0, result


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_resumes(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(yaml.safe_dump(tiny_demo(tiny_cohort, tmp_path / "runs")))
    result = run_cli("run", str(recipe))
    assert result.code == 0, result
    run_dir = tmp_path / "runs" / "demo"
    for stage, modes in (("tokenizer", ("train", "extract", "evaluate")), ("prior", ("train", "sample", "evaluate"))):
        for mode in modes:
            assert (run_dir / stage / f"metrics.{mode}.json").is_file(), (stage, mode)
    assert len(list((run_dir / "prior" / "samples").glob("sample_*.nii.gz"))) == 4
    # the prior found the tokens through the {tokenizer} placeholder
    saved = yaml.safe_load((run_dir / "prior" / "recipe.yaml").read_text())
    assert saved["data"]["train"] == str((run_dir / "tokenizer").resolve() / "tokens" / "train")

    # Re-running refuses to overwrite; --resume skips every finished mode.
    assert run_cli("run", str(recipe)).code == 2
    result = run_cli("run", str(recipe), "--resume")
    assert result.code == 0, result
    assert result.out.count("already done, skipped") == 6
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert 0 < summary["tokenizer_ms_ssim"] <= 1 and "ventricular_volume_spearman" in summary
    # the real brains were also measured after the tokenizer: the ceiling of the samples' rho
    assert "ventricular_volume_reconstructed_spearman" in summary
    real = sorted(p.name for p in (run_dir / "prior" / "evaluation" / "real").glob("*.nii.gz"))
    through = sorted(p.name for p in (run_dir / "prior" / "evaluation" / "reconstructed").glob("*.nii.gz"))
    assert real and through == real
    # calibrated and distribution metrics, per conditioned volume (the demo samples at the val subjects' values)
    assert "brain_volume_slope" in summary and "brain_volume_fixed_at" not in summary
    for key in ("ventricular_volume_intercept", "ventricular_volume_mae", "ventricular_volume_wasserstein",
                "volume_wasserstein_joint", "ventricular_volume_coverage", "sharpness_ratio",
                "sharpness_reconstructed_ratio", "brain_volume_spearman", "brain_volume_mae",
                "ventricular_volume_kept_slope"):
        assert key in summary, key
    assert summary["sharpness_reconstructed_ratio"] > 0 and summary["sharpness_ratio"] > 0
    for name in ("distribution_ventricular_volume.png", "distribution_joint.png", "sharpness.png"):
        assert (run_dir / "report" / name).is_file(), name
    html = (run_dir / "report" / "index.html").read_text()
    for name in re.findall(r'(?:src|href)="([^"#:]+)"', html):
        assert (run_dir / "report" / name).is_file(), name


def test_a_bad_stage_fails_before_anything_runs(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    demo = tiny_demo(tiny_cohort, tmp_path / "runs")
    demo["stages"][1]["recipe"]["network"]["depht"] = 2
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(yaml.safe_dump(demo))
    result = run_cli("run", str(recipe))
    assert result.code == 2
    assert "stage 'prior'" in result.err and "depht" in result.err and "Did you mean 'depth'" in result.err
    assert not (tmp_path / "runs" / "demo").exists()


def test_placeholders_name_earlier_stages_only(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    demo = tiny_demo(tiny_cohort, tmp_path / "runs")
    demo["stages"][1]["recipe"]["data"]["train"] = "{tokeniser}/tokens/train"
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(yaml.safe_dump(demo))
    result = run_cli("validate", str(recipe))
    assert result.code == 2 and "'{tokeniser}' names no earlier stage; earlier stages: tokenizer" in result.err
