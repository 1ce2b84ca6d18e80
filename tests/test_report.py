"""The evaluation report: self-contained HTML, PNG figures, summary.json/md, safe writing."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from _data_fixtures import tiny_cohort, write_nifti  # noqa: F401  (fixture)

from brainsynth.core.errors import DataError, RunError
from brainsynth.library.report import ReportInputs, write_report
from brainsynth.library.volume_files import VIEWS, load_ras, mid_slice

AFFINE = np.array([[3.0, 0, 0, -48.0], [0, 3.0, 0, -66.0], [0, 0, 3.0, -36.0], [0, 0, 0, 1]])


class References(HTMLParser):
    """Every src/href of a page, and whether it has scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def blob(seed: int, shape=(20, 24, 18)) -> np.ndarray:
    """A bright ellipsoid with a dark core: a volume that looks like something at any slice."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(axis=0))
    rng = np.random.default_rng(seed)
    return ((radius < 0.8) * (1.0 - 0.6 * (radius < 0.3 + 0.05 * seed)) + 0.05 * rng.random(shape)).astype(np.float32)


@pytest.fixture
def volumes(tmp_path) -> dict[str, list[Path]]:
    made = {}
    for group, seeds in (("real", (0, 1)), ("reconstructed", (0, 1)), ("sampled", (2, 3, 4))):
        made[group] = [write_nifti(tmp_path / group / f"{group}_{s}.nii.gz", blob(s), AFFINE) for s in seeds]
    return made


def morphology_rows() -> list[dict]:
    rows = []
    for index, conditioned in enumerate((12.0, 25.0, 40.0)):
        rows.append({"set": "sample", "name": f"sampled_{index + 2}", "conditioned_age": 60.0 + index,
                     "conditioned_ventricular_volume": conditioned, "measured_ventricular_volume": 0.9 * conditioned + 2,
                     "conditioned_brain_volume": 1400.0 + 50 * index, "measured_brain_volume": 1390.0 + 60 * index})
    rows.append({"set": "real", "name": "real_0", "conditioned_ventricular_volume": 20.0,
                 "measured_ventricular_volume": 21.0})
    return rows


def inputs(volumes, **changes) -> ReportInputs:
    fields = dict(
        title="tiny <demo>", recipe_text="task: pipeline\nseed: 0\n",
        metrics={"tokenizer_ms_ssim": 0.912, "ventricular_volume_spearman": 1.0, "fid_random_features": float("nan")},
        real=volumes["real"], reconstructed=volumes["reconstructed"], sampled=volumes["sampled"],
        morphology=morphology_rows(), notes={"fid_random_features": "random features, NOT FID"}, montage_columns=3,
    )
    fields.update(changes)
    return ReportInputs(**fields)


def test_report_references_only_files_that_exist(tmp_path, volumes):
    index = write_report(tmp_path / "report", inputs(volumes))
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text()
    parser = References()
    parser.feed(page)
    assert parser.scripts == 0 and "http" not in " ".join(parser.links)  # offline: nothing fetched
    for link in parser.links:
        assert not Path(link).is_absolute() and (index.parent / link).is_file(), link
    pngs = sorted(link for link in parser.links if link.endswith(".png"))
    assert pngs == ["distribution_ventricular_volume.png", "montage_axial.png", "montage_coronal.png",
                    "montage_sagittal.png", "morphology_brain_volume.png", "morphology_ventricular_volume.png"]
    for name in pngs:
        image = matplotlib.image.imread(index.parent / name)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.05, name  # drawn, not blank
    assert "tiny &lt;demo&gt;" in page and "task: pipeline" in page and "tokenizer_ms_ssim" in page
    assert not list(tmp_path.glob(".report*"))  # no staging folder left behind


def test_summary_json_and_markdown_carry_the_metrics(tmp_path, volumes):
    folder = write_report(tmp_path / "report", inputs(volumes)).parent
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == {"tokenizer_ms_ssim": 0.912, "ventricular_volume_spearman": 1.0, "fid_random_features": None}
    markdown = (folder / "summary.md").read_text()
    assert "| `tokenizer_ms_ssim` | 0.912 |" in markdown and "| `fid_random_features` | n/a |" in markdown
    assert "![" in markdown and "(montage_axial.png)" in markdown
    assert (folder / "recipe.yaml").read_text() == "task: pipeline\nseed: 0\n"
    assert (folder / "morphology.csv").read_text().splitlines()[0].startswith("set,name,")


def test_a_report_with_metrics_only_has_no_figures(tmp_path):
    index = write_report(tmp_path / "report", ReportInputs(title="numbers", metrics={"mmd": 0.01}))
    parser = References()
    parser.feed(index.read_text())
    assert not [link for link in parser.links if link.endswith(".png")]
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html", "summary.json", "summary.md"]


def test_reports_are_never_written_over_unless_asked(tmp_path, volumes):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a report"):
        write_report(taken, inputs(volumes), overwrite=True)
    assert (taken / "notes.txt").read_text() == "mine"

    light = dict(real=[], reconstructed=[], sampled=[], morphology=[])
    folder = write_report(tmp_path / "report", inputs(volumes, **light)).parent
    with pytest.raises(RunError, match="already holds a report"):
        write_report(folder, inputs(volumes, **light, metrics={"mmd": 2.0}))
    write_report(folder, inputs(volumes, **light, metrics={"mmd": 2.0}), overwrite=True)
    assert json.loads((folder / "summary.json").read_text()) == {"mmd": 2.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real", "reconstructed", "report", "sampled", "taken"]


def test_bad_inputs_name_the_file(tmp_path, volumes):
    missing = tmp_path / "sampled" / "gone.nii.gz"
    with pytest.raises(DataError, match=r"sampled volume .*gone\.nii\.gz does not exist"):
        write_report(tmp_path / "report", inputs(volumes, sampled=[*volumes["sampled"], missing]))
    with pytest.raises(DataError, match="1 reconstructions for 2 real brains"):
        write_report(tmp_path / "report", inputs(volumes, reconstructed=volumes["reconstructed"][:1]))
    assert not (tmp_path / "report").exists()


def test_slices_are_shown_right_on_the_right_and_superior_up(tmp_path):
    volume = np.zeros((10, 12, 8), np.float32)
    volume[1, 10, 6] = 1.0  # voxel (1, 10, 6)
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])  # voxel x runs right -> left: voxel 1 is on the subject's right
    ras, zooms = load_ras(write_nifti(tmp_path / "lps.nii.gz", volume, flipped))
    assert ras[8, 10, 6] == 1.0 and tuple(zooms) == (2.0, 2.0, 2.0)

    axial = mid_slice(ras[:, :, [6] * 8], VIEWS["axial"])  # row 0 on top
    rows, columns = np.nonzero(axial)
    assert columns[0] > axial.shape[1] / 2 and rows[0] < axial.shape[0] / 2  # right, anterior (up)
    coronal = mid_slice(ras[:, [10] * 12, :], VIEWS["coronal"])
    rows, columns = np.nonzero(coronal)
    assert columns[0] > coronal.shape[1] / 2 and rows[0] < coronal.shape[0] / 2  # right, superior (up)


def test_report_command_evaluates_a_samples_folder(tmp_path, tiny_cohort, run_cli):  # noqa: F811
    with open(tiny_cohort / "conditioning.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    samples = tmp_path / "samples"  # laid out as the sample mode writes it
    samples.mkdir()
    with open(samples / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "file", "age", "sex", "ventricular_volume", "brain_volume"])
        for index, row in enumerate(table[:3]):
            name = f"sample_{index:05d}.nii.gz"
            shutil.copy(tiny_cohort / "images" / f"{row['subject']}.nii.gz", samples / name)
            writer.writerow([index, name, row["age"], "F", row["ventricular_volume"], row["brain_volume"]])
    real = tmp_path / "real"
    real.mkdir()
    for row in table[3:5]:
        shutil.copy(tiny_cohort / "images" / f"{row['subject']}.nii.gz", real)

    result = run_cli("report", str(tmp_path / "report"), "--samples", str(samples), "--real", str(real),
                     "--real-conditioning", str(tiny_cohort / "conditioning.tsv"), "--reconstructed", str(real),
                     "--metric", "tokenizer_ms_ssim=0.91")
    assert result.code == 0, result
    assert f"report: {tmp_path / 'report' / 'index.html'}" in result.out and "fid_random_features" in result.out
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["tokenizer_ms_ssim"] == 0.91
    assert -1.0 <= summary["ventricular_volume_spearman"] <= 1.0  # 3 samples: a rank check, quality is tested elsewhere
    assert "ventricular_volume_real_slope" in summary and summary["ms_ssim_diversity"] < 1.0
    assert (tmp_path / "report" / "morphology_ventricular_volume.png").is_file()
    # the "reconstructions" are the real brains themselves: as sharp, and measured like them
    assert summary["sharpness_reconstructed_ratio"] == pytest.approx(1.0)
    assert "ventricular_volume_reconstructed_mae" in summary and summary["sharpness_ratio"] > 0

    again = run_cli("report", str(tmp_path / "report"), "--samples", str(samples), "--real", str(real))
    assert again.code == 2 and "already holds a report" in again.err and "Traceback" not in again.err
    bad = run_cli("report", str(tmp_path / "other"), "--samples", str(samples), "--real", str(real), "--metric", "x")
    assert bad.code == 2 and "NAME=NUMBER" in bad.err
