"""The ``tokenizer`` task: train a VQ-VAE, extract token grids, decode them, evaluate reconstructions."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from brainsynth.core.checkpoint import load_checkpoint
from brainsynth.core.errors import DataError, RecipeError, RunError
from brainsynth.core.files import is_data_file
from brainsynth.core.runner import Run
from brainsynth.core.schema import NonNegativeFloat, NonNegativeInt, PositiveInt
from brainsynth.core.task import Section, Task
from brainsynth.core.loop import LoopConfig, Position, Trained, TrainingLoop, evaluation_due
from brainsynth.library.token_files import listed_grids, read_meta, stale_note, write_meta
from brainsynth.core.precision import autocast
from brainsynth.library.adversarial_weighting import adaptive_weight, last_layer_weight, scheduled_weight
from brainsynth.library.volume_files import mid_slices, write_nifti, write_npy_atomic

DEFAULT_METRICS = ("ms_ssim", "mae", "mse", "psnr")


@dataclasses.dataclass
class TokenizerTrainConfig(LoopConfig):
    """The ``train`` section of a tokenizer recipe (epochs, batch_size, num_workers, log_every and
    checkpoint_every are the shared loop's)."""

    eval_every: PositiveInt = 1
    """Evaluate on the val split every N epochs."""
    image_every: PositiveInt = 1
    """Log mid-slice images every N evaluations."""
    best_metric: str = "ms_ssim"
    """The evaluation metric that picks ``best.pt`` (maximised or minimised as the metric says)."""


@dataclasses.dataclass
class AdversarialConfig:
    """The ``adversarial`` section: weight and schedule of the generator's adversarial term."""

    weight: NonNegativeFloat = 0.0
    """0 switches adversarial training off."""
    warmup_epochs: NonNegativeInt = 0
    """Epochs over which the weight ramps linearly from 0 to `weight` (0: no ramp)."""
    start_epoch: NonNegativeInt = 0
    """Epochs of reconstruction-only training before the adversarial term starts."""
    adaptive: bool = False
    """Scale by VQGAN's adaptive weight (ratio of gradient norms at the decoder's last layer)."""


@dataclasses.dataclass
class OutputsConfig:
    """Where extract, decode and evaluate read from and write to."""

    checkpoint: Literal["best", "last"] = "best"
    splits: list[str] | None = None
    """Splits to extract or evaluate (default: every split of the data)."""
    reconstructions: bool = False
    """extract: also write reconstructions as NIfTI."""
    tokens: str | None = None
    """decode: a folder of ``.npy`` token grids (default: the run's ``tokens/`` folder)."""


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """`module` with ``requires_grad`` off for its parameters (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _affine(image: torch.Tensor, index: int) -> np.ndarray:
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = affine[index] if affine.dim() == 3 else affine
    return affine.detach().cpu().numpy().astype(np.float64)


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


class TokenizerTask(Task):
    """Train a VQ-VAE tokenizer; extract, decode and evaluate with it."""

    sections = {
        "data": Section(kind="dataset", default="nifti", doc="volumes"),
        "network": Section(kind="tokenizer", required=True, doc="the VQ-VAE"),
        "loss": Section(kind="loss", default="jukebox_perceptual"),
        "discriminator": Section(kind="discriminator", doc="set with adversarial.weight > 0"),
        "adversarial_loss": Section(kind="adversarial_loss", default="least_square"),
        "adversarial": Section(schema=AdversarialConfig),
        "metrics": Section(kind="metric", many=True),
        "optimizer": Section(kind="optimizer", default="adam"),
        "discriminator_optimizer": Section(kind="optimizer", default="adam"),
        "train": Section(schema=TokenizerTrainConfig),
        "outputs": Section(schema=OutputsConfig),
    }
    modes = ("train", "extract", "decode", "evaluate")

    def run(self, run: Run) -> dict[str, Any]:
        return getattr(self, run.mode)(run)

    # -- building ------------------------------------------------------------------------------
    def _network(self, run: Run):
        return run.build("network").to(run.device)

    def _load_trained(self, run: Run, network) -> dict[str, Any]:
        name = run.recipe["outputs"]["checkpoint"]
        path = run.checkpoints / f"{name}.pt"
        if not path.is_file():
            raise RunError(f"{path}: no '{name}' checkpoint in this run; train it first (--mode train).")
        state = load_checkpoint(path, task=run.recipe.task, modules={"network": network}, restore_rng=False)
        network.eval()
        return state

    # -- train ---------------------------------------------------------------------------------
    def train(self, run: Run) -> dict[str, Any]:
        """Train the VQ-VAE (and its discriminator) on the shared loop; one step is `_train_step`."""
        recipe = run.recipe
        config = recipe["train"]
        data = run.build("data")
        network = self._network(run)
        loss_fn = run.build("loss").to(run.device)
        run.say(f"loss: {loss_fn.describe() if hasattr(loss_fn, 'describe') else type(loss_fn).__name__}")
        adversarial = recipe["adversarial"]
        use_adversarial = adversarial["weight"] > 0  # with a discriminator: `check_recipe`
        best_metric = config["best_metric"]  # among the metrics: `check_recipe`
        metric_objects = self._metrics(run)

        loop = TrainingLoop(run, data.split("train", train=True), config, desc="tokenizer")
        # The EMA codebook sums its statistics over ranks itself: its buffers are not broadcast.
        generator = loop.add("network", network, recipe["optimizer"], broadcast_buffers=False)
        discriminator = criterion = None
        if use_adversarial:
            module = run.build("discriminator").to(run.device)
            discriminator = loop.add("discriminator", module, recipe["discriminator_optimizer"])
            criterion = run.build("adversarial_loss")

        def on_epoch_start(epoch: int) -> None:
            network.codebook.on_epoch_start(epoch + 1, iterations_per_epoch=loop.iterations_per_epoch, batch_size=config["batch_size"])

        def step(batch: dict[str, Any], position: Position) -> dict[str, float]:
            network.check_spatial_shape(batch["image"].shape[2:])  # one line, not a shape error deep in the loss
            if "space" not in loop.extra:
                image = batch["image"]
                loop.extra["space"] = {"affine": _affine(image, 0).tolist(), "spatial_shape": list(image.shape[2:])}
            return self._train_step(loop, batch["image"].to(run.device), position, loss_fn, generator,
                                     discriminator, criterion, adversarial)

        def evaluate(epoch: int) -> dict[str, float] | None:
            if not evaluation_due(epoch, config["eval_every"], config["epochs"]):
                return None
            evaluation = self._evaluate_split(run, network, data.split("val", train=False))
            summary = evaluation["summary"]
            run.log.log(loop.step, summary, split="val", epoch=epoch + 1)
            evaluations = (epoch + 1) // config["eval_every"]
            if evaluations % config["image_every"] == 0 and run.dist.is_main and evaluation["example"] is not None:
                real, recon = evaluation["example"]
                run.log.log_image("val/real_vs_reconstruction", np.concatenate([mid_slices(real), mid_slices(recon)], axis=0), loop.step)
            return {f"val_{k}": v for k, v in summary.items()}

        direction = "max" if metric_objects[best_metric].higher_is_better else "min"
        return loop.fit(
            step, on_epoch_start=on_epoch_start, evaluate=evaluate if "val" in data.splits else None,
            best=(f"val_{best_metric}", direction), best_modules=("network",),
        )

    @staticmethod
    def _train_step(loop: TrainingLoop, image: torch.Tensor, position: Position, loss_fn, generator: Trained,
                    discriminator: Trained | None, criterion, adversarial: dict) -> dict[str, float]:
        """One generator step (reconstruction + quantisation [+ weighted adversarial] loss), then one
        discriminator step on (real, detached reconstruction)."""
        network = generator.module
        with loop.autocast():
            out = generator.model(image)
        recon = out.reconstruction.float()
        rec = loss_fn(recon, image.float())
        g_loss = rec.total + out.quantization_loss
        logged = {"loss": g_loss.item(), "quantization": out.quantization_loss.item(),
                  "perplexity": out.perplexity.item(), "code_usage": out.code_usage.item()}
        logged.update({k: v.item() for k, v in rec.components.items()})
        logged.update(network.codebook.summaries())
        weight = 0.0
        if discriminator is not None:
            weight = scheduled_weight(adversarial["weight"], position.progress, adversarial["start_epoch"], adversarial["warmup_epochs"])
        if weight > 0:
            # The discriminator judges the reconstruction without taking gradients itself (and
            # without its DDP wrapper, whose gradient hooks belong to the discriminator's step).
            with _frozen(discriminator.module), loop.autocast():
                fake_logits = discriminator.module(recon)
            adv = criterion.generator_loss(fake_logits)
            if adversarial["adaptive"]:
                weight = weight * float(adaptive_weight(rec.total, adv, last_layer_weight(network)))
            g_loss = g_loss + weight * adv
            logged.update({"generator_adversarial": adv.item(), "adversarial_weight": float(weight)})
        generator.update(g_loss)
        if discriminator is not None:
            with loop.autocast():
                real_logits = discriminator.model(image)
                fake_logits = discriminator.model(recon.detach())
            d_loss = criterion.discriminator_loss(real_logits, fake_logits)
            discriminator.update(d_loss)
            logged["discriminator"] = d_loss.item()
        return logged

    # -- evaluation ------------------------------------------------------------------------------
    def _metrics(self, run: Run) -> dict[str, Any]:
        blocks = run.recipe["metrics"] or [{"name": n} for n in DEFAULT_METRICS]
        return {block["name"]: run.registry.build("metric", block) for block in blocks}

    @torch.no_grad()
    def _evaluate_split(self, run: Run, network, dataset) -> dict[str, Any]:
        """Per-subject reconstruction metrics (this rank's share) and their all-reduced means."""
        metrics = self._metrics(run)
        was_training = network.training
        network.eval()
        indices = range(run.dist.rank, len(dataset), run.dist.world_size)
        rows, example = [], None
        for index in indices:
            item = dataset[index]
            image = item["image"].unsqueeze(0).to(run.device)
            with autocast(run.recipe["precision"], run.device):
                out = network(image)
            recon = out.reconstruction.float().clamp(0, 1) if image.min() >= 0 else out.reconstruction.float()
            row = {"subject": item["subject"]}
            for name, metric in metrics.items():
                row[name] = float(metric(recon, image.float()).mean())
            row["perplexity"] = float(out.perplexity)
            row["code_usage"] = float(out.code_usage)
            rows.append(row)
            if example is None:
                example = (image[0], recon[0])
        keys = [k for k in rows[0] if k != "subject"] if rows else list(metrics) + ["perplexity", "code_usage"]
        sums = {k: sum(r[k] for r in rows) for k in keys}
        count = len(rows)
        if run.dist.is_distributed:
            values = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=run.device)
            torch.distributed.all_reduce(values)
            sums = {k: values[i].item() for i, k in enumerate(keys)}
            count = int(values[-1].item())
        network.train(was_training)
        summary = {k: sums[k] / max(count, 1) for k in keys}
        return {"rows": rows, "summary": summary, "example": example}

    def evaluate(self, run: Run) -> dict[str, Any]:
        """Reconstruction metrics of every subject of the chosen splits, as csv tables."""
        data = run.build("data")
        network = self._network(run)
        self._load_trained(run, network)
        out_dir = run.directory / "evaluation"
        results = {}
        for split in run.recipe["outputs"]["splits"] or data.splits:
            evaluation = self._evaluate_split(run, network, data.split(split, train=False))
            if run.dist.is_main:
                out_dir.mkdir(exist_ok=True)
                rows = evaluation["rows"]
                with open(run.path(out_dir / f"{split}.csv", "outputs.splits"), "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
            results[split] = evaluation["summary"]
            run.say(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in evaluation["summary"].items()))
        return results

    # -- extract -----------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, run: Run) -> dict[str, Any]:
        """Token grids (uint16 ``.npy``) of every subject, plus reconstructions if asked."""
        data = run.build("data")
        network = self._network(run)
        state = self._load_trained(run, network)
        outputs = run.recipe["outputs"]
        if network.num_embeddings > np.iinfo(np.uint16).max + 1:
            raise RunError(f"a codebook of {network.num_embeddings} codes does not fit uint16 tokens.")
        counts = {}
        for split in outputs["splits"] or data.splits:
            folder = run.path(Path("tokens") / split, "outputs.splits")
            recon_folder = run.path(Path("reconstructions") / split, "outputs.splits")
            dataset = data.split(split, train=False)
            affines, grid = {}, None
            folder.mkdir(parents=True, exist_ok=True)
            with run.progress(len(dataset), f"extract {split}") as bar:
                for index in range(run.dist.rank, len(dataset), run.dist.world_size):
                    item = dataset[index]
                    image = item["image"].unsqueeze(0).to(run.device)
                    network.check_spatial_shape(image.shape[2:])
                    tokens = network.encode_tokens(image)[0].cpu().numpy().astype(np.uint16)
                    grid = list(tokens.shape)
                    affine = _affine(item["image"], 0)
                    affines[item["subject"]] = affine.tolist()
                    write_npy_atomic(folder / f"{item['subject']}.npy", tokens)
                    if outputs["reconstructions"]:
                        recon_folder.mkdir(parents=True, exist_ok=True)
                        recon = network.decode_tokens(torch.from_numpy(tokens.astype(np.int64))[None].to(run.device))
                        write_nifti(recon_folder / f"{item['subject']}.nii.gz", recon[0], affine)
                    bar.update()
            if run.dist.is_distributed:
                gathered = [None] * run.dist.world_size
                torch.distributed.all_gather_object(gathered, affines)
                affines = {k: v for part in gathered for k, v in part.items()}
            if run.dist.is_main:
                table = getattr(data, "conditioning_table", None)
                meta = {"num_embeddings": network.num_embeddings, "grid": grid, "subjects": sorted(affines),
                        "space": state["extra"].get("space"), "affines": affines,
                        "tokenizer_run": str(run.directory.resolve()),
                        "conditioning_table": str(Path(table).resolve()) if table is not None else None}
                write_meta(folder, meta)
                stale = listed_grids(folder)[1]
                if stale:
                    run.say(f"warning: extract {split}: {stale_note(folder, stale, len(affines))}")
            counts[split] = len(affines)
            run.say(f"extract {split}: {len(affines)} token grids in {folder}")
        return {"tokens": counts}

    # -- decode ------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, run: Run) -> dict[str, Any]:
        """Token grids -> NIfTI volumes in the space the tokenizer was trained in."""
        network = self._network(run)
        state = self._load_trained(run, network)
        source = Path(run.recipe["outputs"]["tokens"] or run.directory / "tokens")
        files = []
        folders = sorted({p.parent for p in source.rglob("*.npy") if is_data_file(p)}) if source.is_dir() else []
        for folder in folders:
            listed, stale = listed_grids(folder)
            files.extend(listed)
            if stale:
                run.say(f"warning: {stale_note(folder, stale, len(listed))}")
        if not files:
            raise DataError(f"{source}: no .npy token grids to decode; set outputs.tokens to a folder of them.")
        space = state["extra"].get("space") or {}
        expected = self._trained_grid(run, network, space)
        default_affine = np.asarray(space.get("affine", np.eye(4)))
        out_root = run.directory / "decoded"
        written = 0
        with run.progress(len(files), "decode") as bar:
            for index in range(run.dist.rank, len(files), run.dist.world_size):
                path = files[index]
                grid = np.load(path, allow_pickle=False)
                if not np.issubdtype(grid.dtype, np.integer):
                    raise DataError(f"{path}: token grids hold integers, this file holds {grid.dtype}.")
                if grid.size and (grid.min() < 0 or grid.max() >= network.num_embeddings):
                    bad = int(grid.max()) if grid.max() >= network.num_embeddings else int(grid.min())
                    raise DataError(
                        f"{path}: token {bad} is outside this tokenizer's codebook [0, {network.num_embeddings}); "
                        f"the grid comes from another tokenizer."
                    )
                if expected is not None and tuple(grid.shape) != expected:
                    raise DataError(
                        f"{path}: token grid of shape {_shape(grid.shape)}, but this tokenizer was trained on "
                        f"{_shape(space['spatial_shape'])} volumes, whose grid is {_shape(expected)} (it would decode "
                        f"to {_shape(network.output_shape(grid.shape))}). The grid comes from another tokenizer or "
                        f"ROI; decode it with that one."
                    )
                affines = read_meta(path.parent).get("affines", {})
                affine = np.asarray(affines.get(path.stem, default_affine))
                volume = network.decode_tokens(torch.from_numpy(grid.astype(np.int64))[None].to(run.device))
                target = out_root / path.parent.relative_to(source)
                target.mkdir(parents=True, exist_ok=True)
                write_nifti(target / f"{path.stem}.nii.gz", volume[0], affine)
                written += 1
                bar.update()
        run.say(f"decode: {written} volumes in {out_root}")
        return {"decoded": written}

    @staticmethod
    def _trained_grid(run: Run, network, space: dict) -> tuple[int, ...] | None:
        """The token grid of the volumes the tokenizer was trained on, when they had one size (data.roi)."""
        if (run.recipe["data"] or {}).get("roi") is None or not space.get("spatial_shape"):
            return None
        return tuple(int(g) for g in network.token_grid(space["spatial_shape"]))

    def load(self, directory, recipe, registry, *, checkpoint, device):
        """A `LoadedTokenizer`: encode and decode in Python (`brainsynth.load`)."""
        from .loaded import load_trained_tokenizer

        return load_trained_tokenizer(directory, recipe, registry, checkpoint, device)

    @classmethod
    def check_recipe(cls, recipe, registry) -> None:
        """validate: rules across sections, and data.roi must survive the network's down-sampling
        (and up-sampling) exactly."""
        from .dry_run import check_roi

        if recipe["adversarial"]["weight"] > 0 and recipe["discriminator"] is None:
            raise RecipeError(
                f"{recipe.origins(('adversarial', 'weight'))}: adversarial.weight > 0 needs a discriminator block "
                "(e.g. discriminator: {name: baseline_discriminator}), or set adversarial.weight: 0."
            )
        metrics = [block["name"] for block in recipe["metrics"]] or list(DEFAULT_METRICS)
        if recipe["train"]["best_metric"] not in metrics:
            raise RecipeError(
                f"{recipe.origins(('train', 'best_metric'))}: train.best_metric: '{recipe['train']['best_metric']}' "
                f"is not among the metrics ({', '.join(metrics)}); name one of them or add it to metrics."
            )
        check_roi(recipe, registry)

    def dry_run(self, recipe, registry):
        """The VQ-VAE (and discriminator) sized on the meta device, and the token grid of data.roi."""
        from .dry_run import tokenizer_dry_run

        return tokenizer_dry_run(recipe, registry)
