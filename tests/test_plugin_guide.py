"""The plugin guide's code runs as written: every ```python block of docs/plugins.md is loaded as a
plugin module into a fresh plugin manager, its components are built the way the engine builds them
and exercised against their kind's contract, so the guide cannot rot."""

from __future__ import annotations

import re
import sys
import tomllib
import types
import warnings
from pathlib import Path

import click
import numpy as np
import pluggy
import pytest
import torch
from click.testing import CliRunner

from brainsynth.core import hookspecs, plugins, runner
from brainsynth.core.data import DataSource
from brainsynth.core.errors import BrainsynthWarning, DataError, RecipeError, RegistryError
from brainsynth.core.kinds import KINDS
from brainsynth.core.optimization import build_optimizer, build_schedule
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import Conditioning, Prior
from brainsynth.core.recipe import load_recipe
from brainsynth.core.registry import Registry
from brainsynth.core.sampling import sample
from brainsynth.core.task import Task
from brainsynth.core.tokenizer import Codebook, LossOutput, ReconstructionLoss, Tokenizer

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def fenced(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block of `language` in the guide."""
    text = GUIDE.read_text()
    return [
        (text[: match.start()].count("\n") + 1, match.group(1))
        for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)
    ]


def load_block(line: int, code: str) -> types.ModuleType:
    """The block as an importable module (type hints and dataclasses look their module up)."""
    module = types.ModuleType(f"plugin_guide_line_{line}")
    sys.modules[module.__name__] = module
    exec(compile(code, f"{GUIDE}:{line}", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def guide():
    """A plugin manager holding exactly the guide's blocks, and the registry they fill."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    modules = []
    for line, code in fenced("python"):
        module = load_block(line, code)
        modules.append(module)
        pm.register(module, name=f"plugin-guide:line{line}")
    plugins.check_hooks(pm)  # a misspelled hook in the guide would fail here
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no deprecated `injected=` in the guide
        registry = plugins.build_registry(pm)
    yield types.SimpleNamespace(pm=pm, registry=registry, modules=modules)
    for module in modules:
        sys.modules.pop(module.__name__, None)


def test_the_guide_has_a_working_example_of_every_kind(guide):
    kinds = {component.kind for component in guide.registry}
    assert kinds == set(KINDS), f"kinds without an example in {GUIDE.name}: {set(KINDS) - kinds}"
    assert all(component.provider.startswith("plugin-guide (line") for component in guide.registry)
    for component in guide.registry:  # every registered component says why it exists
        assert component.description, (component.kind, component.name)


def test_the_hooks_block_adds_a_command(guide):
    group = click.Group()
    guide.pm.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello-guide"])
    assert result.exit_code == 0 and result.output == "hello\n"


def test_ordering(guide):
    ordering = guide.registry.build("ordering", {"name": "column_major"}, spatial_shape=(2, 3, 2))
    assert isinstance(ordering, Ordering)
    assert ordering.sequence_order.tolist() == np.arange(12).reshape(2, 3, 2).flatten(order="F").tolist()
    grid = torch.randint(0, 9, (2, 2, 3, 2))
    assert torch.equal(ordering.revert(ordering.sequence(grid)), grid)
    flipped = guide.registry.build("ordering", {"name": "column_major", "reflected_spatial_dims": [True, False, False]},
                                   spatial_shape=(2, 3, 2))
    assert flipped.sequence_order.tolist() != ordering.sequence_order.tolist()  # the base class's transforms apply


def _prior(guide, conditioned: bool, dim: int = 16):
    ordering = guide.registry.build("ordering", {"name": "column_major"}, spatial_shape=(2, 3, 2))
    conditioning = None
    if conditioned:
        block = {"name": "linear", "variables": [{"column": "age"}, {"column": "sex", "kind": "categorical"}]}
        conditioning = guide.registry.build("conditioning", block, model_dim=dim, num_levels={"sex": 2})
        assert isinstance(conditioning, Conditioning) and conditioning.num_vectors == 1
    return guide.registry.build(
        "prior", {"name": "running_mean", "dim": dim}, num_tokens=9, max_seq_len=12, ordering=ordering,
        conditioning=conditioning,
    )


def test_prior_samples_conditioned_through_its_cached_decoder(guide):
    torch.manual_seed(0)
    prior = _prior(guide, conditioned=True)
    assert isinstance(prior, Prior) and prior.has_cached_decoder
    values = {"age": torch.tensor([0.1, 0.9]), "sex": torch.tensor([0, 1])}
    tokens = torch.randint(0, 8, (2, 11))
    inputs = torch.cat([torch.full((2, 1), prior.bos_token), tokens], dim=1)
    with torch.no_grad():
        full = prior(inputs, values)
        assert full.shape == (2, 12, 9)
        decoder = prior.decoder(2, values)
        steps = torch.stack([decoder.start()] + [decoder.step(tokens[:, i]) for i in range(11)], dim=1)
        swapped = prior(inputs, {"age": torch.tensor([0.9, 0.1]), "sex": torch.tensor([1, 0])})
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-6)  # the cache gives the full forward's logits
    assert not torch.allclose(full, swapped)  # the conditions reach the network
    with warnings.catch_warnings():
        warnings.simplefilter("error", BrainsynthWarning)  # a declared cache: no slow-sampling warning
        drawn = sample(prior, 2, values, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (2, 12) and int(drawn.max()) < 8  # BOS is never drawn
    with pytest.raises(DataError, match="conditioned on age, sex"):
        sample(prior, 2, None)


def test_prior_trains_unconditioned(guide):
    torch.manual_seed(0)
    prior = _prior(guide, conditioned=False)
    optimizer = torch.optim.Adam(prior.parameters(), lr=0.05)
    targets = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5]]).repeat(4, 1)
    inputs = torch.cat([torch.full((4, 1), prior.bos_token), targets[:, :-1]], dim=1)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(prior(inputs).transpose(1, 2), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_tokenizer_and_codebook(guide):
    torch.manual_seed(0)
    block = {"name": "tiny_vqvae", "embedding_dim": 4, "codebook": {"name": "nearest", "num_embeddings": 16}}
    tokenizer = guide.registry.build("tokenizer", block)  # the engine builds the nested codebook block
    assert isinstance(tokenizer, Tokenizer) and isinstance(tokenizer.codebook, Codebook)
    assert (tokenizer.codebook.num_embeddings, tokenizer.codebook.embedding_dim) == (16, 4)
    volumes = torch.rand(2, 1, 8, 8, 8)
    out = tokenizer(volumes)
    assert out.reconstruction.shape == volumes.shape and out.tokens.shape == (2, 4, 4, 4)
    (torch.nn.functional.mse_loss(out.reconstruction, volumes) + out.quantization_loss).backward()
    assert tokenizer.encoder.weight.grad is not None and tokenizer.codebook.embedding.grad is not None
    assert tokenizer.check_spatial_shape((8, 8, 8)) == (4, 4, 4)
    with pytest.raises(DataError, match="does not survive encoding"):
        tokenizer.check_spatial_shape((8, 8, 7))
    tokens = tokenizer.encode_tokens(volumes)
    assert tokenizer.decode_tokens(tokens).shape == volumes.shape
    assert 1 <= float(out.perplexity) <= 16 and 0 < float(out.code_usage) <= 1
    codebook = guide.registry.build("codebook", {"name": "nearest", "num_embeddings": 8}, embedding_dim=3)
    assert codebook.codes.shape == (8, 3) and codebook.quantize(torch.randn(2, 3, 2, 2, 2)).indices.shape == (2, 2, 2, 2)


def test_losses_discriminator_and_adversarial_loss(guide):
    loss = guide.registry.build("loss", {"name": "charbonnier"})
    reconstruction = torch.rand(2, 1, 8, 8, 8, requires_grad=True)
    out = loss(reconstruction, torch.rand(2, 1, 8, 8, 8))
    assert isinstance(loss, ReconstructionLoss) and isinstance(out, LossOutput)
    assert out.total.dim() == 0 and out.total.requires_grad and set(out.components) == {"charbonnier"}
    discriminator = guide.registry.build("discriminator", {"name": "tiny_patch"})
    logits = discriminator(reconstruction)
    assert isinstance(discriminator, torch.nn.Module) and logits.shape == (2, 1, 4, 4, 4)
    criterion = guide.registry.build("adversarial_loss", {"name": "softplus"})
    high, low = torch.full((2, 1, 4, 4, 4), 5.0), torch.full((2, 1, 4, 4, 4), -5.0)
    assert criterion.generator_loss(high) < criterion.generator_loss(low)  # judged real: low generator loss
    assert criterion.discriminator_loss(high, low) < criterion.discriminator_loss(low, high)


def test_metric_and_set_metric(guide):
    from brainsynth.library.volume_sets import VolumeSet  # what the evaluation passes a set metric

    metric = guide.registry.build("metric", {"name": "max_error"})
    target = torch.zeros(3, 1, 4, 4, 4)
    reconstruction = target.clone()
    reconstruction[1, 0, 0, 0, 0] = 0.5
    assert metric(reconstruction, target).tolist() == [0.0, 0.5, 0.0] and metric.higher_is_better is False
    set_metric = guide.registry.build("set_metric", {"name": "mean_intensity_gap"})
    samples = VolumeSet(torch.full((2, 1, 4, 4, 4), 0.75), None, ["s0", "s1"])
    real = VolumeSet(torch.full((3, 1, 4, 4, 4), 0.5), None, ["r0", "r1", "r2"], label="real")
    result = set_metric(samples, real)
    assert set_metric.higher_is_better is None and result.values == {"mean_intensity_gap": 0.25}
    assert [row["name"] for row in result.rows] == ["s0", "s1"] and all(row["set"] == "sample" for row in result.rows)
    with pytest.raises(DataError, match="give evaluation.references"):
        set_metric(samples, None)


def test_dataset(guide):
    data = guide.registry.build("dataset", {"name": "noise_cubes", "count": 3, "size": 4})
    assert isinstance(data, DataSource) and data.splits == ("train", "val") and data.roi_size == (4, 4, 4)
    items = data.split("val")
    assert [s.name for s in data.subjects("val")] == [item["subject"] for item in items] == ["val00", "val01", "val02"]
    assert items[0]["image"].shape == (1, 4, 4, 4) and items[0]["image"].dtype == torch.float32
    assert torch.equal(data.split("val")[2]["image"], items[2]["image"])  # a fixed dataset
    with pytest.raises(DataError, match="no split 'test'"):
        data.subjects("test")


def _count_recipe(tmp_path, split="val"):
    path = tmp_path / "count.yaml"
    path.write_text(
        "task: count_subjects\n"
        f"experiment: {{name: counted, root: {tmp_path / 'runs'}}}\n"
        "data: {name: noise_cubes, count: 3}\n"
        f"count: {{split: {split}}}\n"
    )
    return path


def test_task_runs_a_recipe_and_the_tracker_hears_it(guide, tmp_path, extra_plugin, capsys):
    (tracker_module,) = [m for m in guide.modules if hasattr(m, "tracker")]
    extra_plugin(tracker_module.tracker, "plugin-guide:tracker")  # lifecycle hooks go to the process's plugins
    task = guide.registry.build("task", {"name": "count_subjects"})
    assert isinstance(task, Task) and task.modes == ("run",)
    recipe = load_recipe(str(_count_recipe(tmp_path)), guide.registry)
    assert runner.execute(recipe, guide.registry) == {"subjects": 3}
    assert "val: 3 subjects" in capsys.readouterr().out
    lines = (tmp_path / "runs" / "counted" / "tracker.jsonl").read_text().splitlines()
    assert lines == ['{"step": 1, "split": "val", "subjects": 3}', '{"finished": true}']
    wrong = load_recipe(str(_count_recipe(tmp_path, split="test")), guide.registry, overrides=("experiment.name=wrong",))
    with pytest.raises(RecipeError, match=r"count.yaml:4: no split 'test'; splits: train, val"):
        runner.execute(wrong, guide.registry)
    assert not (tmp_path / "runs" / "wrong").exists()


def test_packaging_block_declares_the_entry_point_group():
    (block,) = [code for _, code in fenced("toml")]
    project = tomllib.loads(block)
    assert list(project["project"]["entry-points"]) == [plugins.ENTRY_POINT_GROUP]
    assert "brainsynth" in project["project"]["dependencies"]


def test_the_readme_links_the_guide():
    readme = (GUIDE.parents[1] / "README.md").read_text()
    assert "(docs/plugins.md)" in readme


@pytest.mark.slow  # end to end: five runs in this process
def test_the_guide_s_components_train_sample_score_and_evaluate_through_the_built_in_tasks(
    guide, extra_plugin, run_cli, tmp_path
):
    """What the guide promises: its components work in real recipes, next to the built-ins."""
    for module in guide.modules:
        if hasattr(module, "register_components") and module.__name__ != guide.modules[0].__name__:
            extra_plugin(module, f"plugin-guide:{module.__name__}")
    root = tmp_path / "runs"
    table = tmp_path / "subjects.tsv"
    table.write_text("subject\tage\tsex\n" + "".join(
        f"{split}{i:02d}\t{50 + 7 * i + (3 if split == 'val' else 0)}\t{i % 2}\n" for split in ("train", "val") for i in range(4)))
    tokenizer = tmp_path / "tok.yaml"
    tokenizer.write_text(
        "task: tokenizer\n"
        f"experiment: {{name: tok, root: {root}}}\n"
        "data: {name: noise_cubes, count: 4, size: 8}\n"
        "network: {name: tiny_vqvae, embedding_dim: 4, codebook: {name: nearest, num_embeddings: 16}}\n"
        "loss: {name: charbonnier}\n"
        "discriminator: {name: tiny_patch}\n"
        "adversarial_loss: {name: softplus}\n"
        "adversarial: {weight: 0.1}\n"
        "metrics: [{name: max_error}]\n"
        "train: {epochs: 1, batch_size: 2, best_metric: max_error}\n"
    )
    prior = tmp_path / "prior.yaml"
    prior.write_text(
        "task: prior\n"
        f"experiment: {{name: prior, root: {root}}}\n"
        f"data: {{name: tokens, train: {root}/tok/tokens/train, val: {root}/tok/tokens/val}}\n"
        "ordering: {name: column_major}\n"
        f"conditioning: {{name: linear, table: {table}, variables: [{{column: age}}, {{column: sex, kind: categorical}}]}}\n"
        "network: {name: running_mean, dim: 16}\n"
        "optimizer: {name: rmsprop, lr: 0.01, schedule: {name: warmup_cosine, warmup: 1}}\n"
        "train: {epochs: 1, batch_size: 2}\n"
        "sample: {split: val, batch_size: 2, png: false}\n"
    )
    for args in (["run", str(tokenizer)], ["run", str(tokenizer), "--mode", "extract"], ["run", str(prior)],
                 ["run", str(prior), "--mode", "sample"], ["run", str(prior), "--mode", "likelihood"],
                 ["run", str(prior), "--mode", "evaluate", "--set", "evaluation.metrics=[{name: mean_intensity_gap}]"]):
        result = run_cli(*args)
        assert result.code == 0, (args, result)
        assert "warning: " not in result.err, result.err
    run = root / "prior"
    assert len(list((run / "samples").glob("sample_*.nii.gz"))) == 4
    assert list((run / "likelihood").glob("*"))
    assert "mean_intensity_gap" in (run / "metrics.evaluate.json").read_text()
    assert "max_error" in (root / "tok" / "metrics.train.json").read_text()


def _kinds_table() -> dict[str, tuple[str | None, set, set, set]]:
    """The guide's kinds table: kind -> (base class, members, engine arguments, required arguments)."""
    text = GUIDE.read_text()
    rows = re.search(r"^\| kind .*?\n\n", text, flags=re.S | re.M).group(0).strip().splitlines()[2:]
    table = {}
    for row in rows:
        kind, base, members, passes, requires = (cell.strip() for cell in row.strip("|").split("|"))
        names = [set(re.findall(r"`(\w+)`", cell)) for cell in (members, passes, requires)]
        table[kind.strip("`")] = (base.strip("`") if base.startswith("`") else None, *names)
    return table


def test_the_kinds_table_is_core_kinds():
    """Every kind of `brainsynth.core.kinds` is in the guide's table, with its contract as declared there."""
    table = _kinds_table()
    assert list(table) == list(KINDS)  # every kind, optimizer and lr_schedule included, in the table's order
    for name, kind in KINDS.items():
        base, members, passes, requires = table[name]
        assert base == (kind.contract.replace(":", ".") if kind.contract else None), name
        assert members == set(kind.members), name
        assert passes == set(kind.supplies) | {nested.parameter for nested in kind.nested}, name
        assert requires == set(kind.requires), name
    assert f"[ordering] {KINDS['ordering'].describe()}\n" in GUIDE.read_text()  # the quoted `plugins --kind` line
    for name, kind in KINDS.items():  # every kind has a section; former names are named
        assert re.search(rf"^### .*\b{name}\b", GUIDE.read_text(), flags=re.M), f"no section for {name}"
        for alias in kind.aliases:
            assert f"`{alias}` is its former name" in GUIDE.read_text(), alias


def test_the_guide_s_components_take_the_engine_arguments_of_their_kind(guide):
    """Inferred from the signatures: each example declares what its kind requires, and gets no recipe key for it."""
    for component in guide.registry:
        kind = KINDS[component.kind]
        assert set(kind.requires) <= set(component.injected) <= set(kind.supplies), component
        assert not set(kind.supplies) & set(component.schema.parameters), component


def test_optimizer_and_schedule_train_through_the_registry(guide):
    """Built the way the training loop builds them (`build_optimizer`, `build_schedule`), one step each."""
    torch.manual_seed(0)
    block = {"name": "rmsprop", "lr": 0.1, "alpha": 0.9, "grad_clip": 1.0, "schedule": {"name": "warmup_cosine", "warmup": 2}}
    params = guide.registry.get("optimizer", "rmsprop").schema.validate(block, ignore=("name",))
    assert set(params) == {"lr", "alpha", "weight_decay", "grad_clip", "schedule"}  # the engine's keys, not `parameters`
    layer = torch.nn.Linear(3, 1)
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    optimizer = build_optimizer([*layer.parameters(), frozen], {"name": "rmsprop", **params}, guide.registry)
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.param_groups[0]["alpha"] == 0.9
    assert len(optimizer.param_groups[0]["params"]) == 2  # trainable parameters only
    schedule = build_schedule(optimizer, params, guide.registry, total_steps=4)
    assert isinstance(schedule, torch.optim.lr_scheduler.LRScheduler)
    lrs = [schedule.get_last_lr()[0]]
    before = layer.weight.detach().clone()
    for _ in range(4):
        loss = layer(torch.randn(8, 3)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    assert not torch.equal(layer.weight, before)
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.0], abs=1e-12)  # warm-up over 2, then cosine to 0 at step 4


def test_the_lazy_registration_line_defers_the_import(tmp_path, monkeypatch):
    """The guide's `".module:Name"` line, in a package holding the guide's prior as that module."""
    text = GUIDE.read_text()
    (line,) = re.findall(r'^registry\.register\("prior", "running_mean", "\.running_mean:\w+"\)$', text, flags=re.M)
    (prior_code,) = [code for _, code in fenced("python") if "class RunningMeanPrior" in code]
    package = tmp_path / "guide_lazy_pkg"
    package.mkdir()
    (package / "running_mean.py").write_text(prior_code)
    (package / "__init__.py").write_text(
        "from brainsynth.core.hookspecs import hookimpl\n\n\n@hookimpl\ndef register_components(registry):\n    " + line + "\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import guide_lazy_pkg

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(guide_lazy_pkg, name="guide-lazy:running_mean")
    registry = plugins.build_registry(pm)
    component = registry.get("prior", "running_mean")
    assert component.lazy and "guide_lazy_pkg.running_mean" not in sys.modules  # registering imported nothing
    assert component.injected == ("num_tokens", "max_seq_len", "ordering", "conditioning")  # first use imports it
    assert not component.lazy and "guide_lazy_pkg.running_mean" in sys.modules
    assert list(component.schema.parameters) == ["dim"]
    sys.modules.pop("guide_lazy_pkg.running_mean", None)
    sys.modules.pop("guide_lazy_pkg", None)


def test_the_quoted_contract_refusal_is_the_registry_s(guide):
    """The error line the guide shows for a prior without `conditioning` is what the registry says."""
    (prior_module,) = [m for m in guide.modules if hasattr(m, "RunningMeanPrior")]

    class MyPrior(prior_module.RunningMeanPrior):
        def __init__(self, dim: int = 32, *, num_tokens: int, max_seq_len: int) -> None:
            super().__init__(dim, num_tokens=num_tokens, max_seq_len=max_seq_len)

    with pytest.raises(RegistryError) as info:
        Registry().register("prior", "my_prior", MyPrior, provider="my-plugin (my_plugin)")
    assert f"error: {info.value}\n" in GUIDE.read_text()


class _Raster(Ordering):
    """A raster walk, registered the old way."""

    def walk(self, shape):
        return np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=1)


def test_injected_is_deprecated_as_the_guide_says():
    registry = Registry()
    with pytest.warns(DeprecationWarning, match="inferred from the factory's signature"):
        registry.register("ordering", "old", _Raster, injected=("spatial_shape",), provider="old-plugin")
    assert re.search(r"`injected=` keyword of earlier versions is\s+deprecated", GUIDE.read_text())
    assert "injected=(" not in GUIDE.read_text()  # no example uses it
