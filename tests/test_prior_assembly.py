"""One prior assembler: ``run --dry-run`` sizes exactly the prior a run builds.

The dry run and the runs both wire ordering, conditioning and network through
`library.prior_assembly.assemble_prior`; these tests build the demo's prior recipe (and the same
recipe with other conditioning placements) both ways and compare every parameter's name and shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _toy_plugin import BigramPrior
from conftest import write_token_grids

from brainsynth.core.distributed import DistributedContext
from brainsynth.core.errors import RecipeError
from brainsynth.core.hookspecs import hookimpl
from brainsynth.core.plugins import registry
from brainsynth.core.recipe import load_recipe
from brainsynth.core.runner import Run
from brainsynth.library.prior_assembly import build_prior_parts
from brainsynth.plugins.tasks.prior import dry_run as prior_dry_run_module
from brainsynth.plugins.tasks.prior.task import PriorTask

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
GRID = (3, 4, 2)
CODES = 16


def demo_prior_recipe() -> dict:
    """The prior stage of recipes/demo.yaml, as the demo runs it."""
    demo = yaml.safe_load(DEMO.read_text())
    (prior,) = [stage["recipe"] for stage in demo["stages"] if stage["name"] == "prior"]
    return prior


@pytest.fixture
def token_data(tmp_path) -> dict:
    """Token grids of 6 train and 2 val subjects whose tokens.json names a conditioning table, as extract writes.

    The table also holds a subject outside the grids with a diagnosis no grid subject has: a run
    fits the levels on the training subjects only, and so must the dry run."""
    table = tmp_path / "conditioning.tsv"
    rows = ["subject\tage\tsex\tdiagnosis\tventricular_volume\tbrain_volume"]
    for i in range(8):
        rows.append(f"subject{i:02d}\t{60 + i}\t{'MF'[i % 2]}\t{('CN', 'AD')[i % 2]}\t{20 + i}\t{1100 + i}")
    rows.append("elsewhere\t70\tF\tMCI\t30\t1000")
    table.write_text("\n".join(rows) + "\n")
    folders = {}
    for split, offset, count in (("train", 0, 6), ("val", 6, 2)):
        folder = write_token_grids(tmp_path / "tokens" / split, count=count, grid=GRID, num_embeddings=CODES)
        for i in range(count):  # subject numbers go on across splits
            (folder / f"subject{i:02d}.npy").rename(folder / f"tmp{offset + i:02d}.npy")
        for path in folder.glob("tmp*.npy"):
            path.rename(folder / path.name.replace("tmp", "subject"))
        meta = json.loads((folder / "tokens.json").read_text())
        meta["conditioning_table"] = str(table)
        (folder / "tokens.json").write_text(json.dumps(meta))
        folders[split] = str(folder)
    return folders


def write_recipe(tmp_path: Path, prior: dict, token_data: dict) -> Path:
    prior = {**prior, "data": {"name": "tokens", **token_data}, "experiment": {"name": "prior", "root": str(tmp_path / "runs")}}
    path = tmp_path / "prior.yaml"
    path.write_text(yaml.safe_dump(prior))
    return path


def shapes(module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize("placement", ["cross_attend", "prepend", "bos_replacement"])
def test_dry_run_sizes_the_prior_a_run_builds(tmp_path, token_data, monkeypatch, placement):
    prior = demo_prior_recipe()  # the demo conditions through cross_attend
    prior["conditioning"] = {**prior["conditioning"], "name": placement}
    recipe = load_recipe(write_recipe(tmp_path, prior, token_data), registry())

    built = {}
    assemble = prior_dry_run_module.assemble_prior

    def recording(*args, **kwargs):
        built["parts"] = assemble(*args, **kwargs)
        return built["parts"]

    monkeypatch.setattr(prior_dry_run_module, "assemble_prior", recording)
    report = PriorTask().dry_run(recipe, registry())
    _, dry_conditioning, dry_network = built["parts"]

    run = Run(recipe=recipe, directory=tmp_path / "runs" / "prior", registry=registry(), dist=DistributedContext())
    parts = build_prior_parts(run, fit_split="train")

    assert shapes(dry_network) == shapes(parts.network)
    assert shapes(dry_conditioning) == shapes(parts.conditioning)
    assert report.models[0].parameters == sum(p.numel() for p in parts.network.parameters())
    assert report.token_grid == parts.grid == GRID
    assert parts.table.num_levels == {"sex": 2, "diagnosis": 2}  # 'MCI' is no training subject's


class DimlessPrior(BigramPrior):
    """A third-party prior that declares no ``dim``: a conditioning must then be given its width."""

    def __init__(self, num_tokens: int, max_seq_len: int, conditioning=None) -> None:
        super().__init__(num_tokens, max_seq_len, 16, conditioning)


class DimlessPlugin:
    @staticmethod
    @hookimpl
    def register_components(registry):
        registry.register("prior", "dimless", DimlessPrior)


def test_a_conditioning_without_a_width_is_refused_by_runs_and_dry_run_alike(tmp_path, token_data, extra_plugin):
    extra_plugin(DimlessPlugin, "dimless-dist:dimless")
    prior = demo_prior_recipe()
    prior["network"] = {"name": "dimless"}
    recipe = load_recipe(write_recipe(tmp_path, prior, token_data), registry())
    with pytest.raises(RecipeError, match="conditioning.dim"):
        PriorTask().dry_run(recipe, registry())
    run = Run(recipe=recipe, directory=tmp_path / "runs" / "prior", registry=registry(), dist=DistributedContext())
    with pytest.raises(RecipeError, match="conditioning.dim"):
        build_prior_parts(run, fit_split="train")
