"""The pipeline task, and the demo recipe run end to end at a tiny size."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from _data_fixtures import TINY_COHORT, tiny_cohort  # noqa: F401  (fixture)
from conftest import one_line_error

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

    # The report is a mode of its own: it rebuilds the page from the stages' outputs alone.
    shutil.rmtree(run_dir / "report")
    result = run_cli("run", str(recipe), "--mode", "report")
    assert result.code == 0, result
    assert f"report: {run_dir / 'report' / 'index.html'}" in result.out and "stage '" not in result.out
    assert json.loads((run_dir / "report" / "summary.json").read_text()) == summary


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


def write_demo(tmp_path: Path, cohort: Path, **report) -> Path:
    """The tiny demo with its ``report`` section replaced (left out when `report` is empty)."""
    demo = tiny_demo(cohort, tmp_path / "runs")
    demo.pop("report", None)
    if report:
        demo["report"] = report
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(yaml.safe_dump(demo))
    return recipe


def test_the_report_reads_the_stages_its_section_names(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    assert yaml.safe_load(DEMO.read_text())["report"] == {"tokenizer": "tokenizer", "prior": "prior"}
    assert run_cli("validate", str(write_demo(tmp_path, tiny_cohort, tokenizer="tokenizer", prior="prior"))).code == 0
    # No report section: no report (a pipeline's stages need not be a tokenizer and a prior).
    assert run_cli("validate", str(write_demo(tmp_path, tiny_cohort))).code == 0
    assert run_cli("validate", str(write_demo(tmp_path, tiny_cohort, enabled=False))).code == 0

    error = one_line_error(run_cli("validate", str(write_demo(tmp_path, tiny_cohort, prior="sampler"))))
    assert "report.prior: 'sampler' is not a stage of this pipeline; stages: tokenizer, prior." in error
    # A report section that names no stage meant stages 'tokenizer' and 'prior' before; now it says what to write.
    error = one_line_error(run_cli("validate", str(write_demo(tmp_path, tiny_cohort, title="study"))))
    assert "report: name the stages it reports on, e.g. report: {tokenizer: <stage>, prior: <stage>}" in error
    assert "or write report: {enabled: false}" in error


def test_the_report_needs_its_stages_evaluated(tmp_path, run_cli, tiny_cohort):  # noqa: F811
    demo = tiny_demo(tiny_cohort, tmp_path / "runs")
    demo["stages"][1]["modes"] = ["train", "sample"]
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(yaml.safe_dump(demo))
    error = one_line_error(run_cli("validate", str(recipe)))
    assert "report.prior: stage 'prior' runs train, sample, not evaluate" in error


def test_the_pipeline_code_knows_no_stage_name():
    """The demo's stage names live in recipes/demo.yaml: the report's section has no stage by default,
    and running and planning stages name none."""
    from brainsynth.plugins.tasks.pipeline.report import ReportConfig

    assert ReportConfig().tokenizer is None and ReportConfig().prior is None
    package = Path(__file__).resolve().parents[1] / "brainsynth" / "plugins" / "tasks" / "pipeline"
    for name in ("task.py", "run.py"):
        assert not re.search(r"""["'](tokenizer|prior)["']""", (package / name).read_text()), name
