"""``train``: the VQ-VAE (and its discriminator, with adversarial training) on the shared loop."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from brainsynth.core.loop import Position, Trained, TrainingLoop, evaluation_due
from brainsynth.core.runner import Run
from brainsynth.library.adversarial_weighting import adaptive_weight, last_layer_weight, scheduled_weight
from brainsynth.library.volume_files import mid_slices, volume_affine

from .evaluate import build_metrics, evaluate_split
from .network import build_network


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



def run_mode(run: Run) -> dict[str, Any]:
    """Train the VQ-VAE (and its discriminator) on the shared loop; one step is `_train_step`."""
    recipe = run.recipe
    config = recipe["train"]
    data = run.build("data")
    network = build_network(run)
    loss_fn = run.build("loss").to(run.device)
    run.say(f"loss: {loss_fn.describe() if hasattr(loss_fn, 'describe') else type(loss_fn).__name__}")
    adversarial = recipe["adversarial"]
    use_adversarial = adversarial["weight"] > 0  # with a discriminator: `check_recipe`
    best_metric = config["best_metric"]  # among the metrics: `check_recipe`
    metric_objects = build_metrics(run)

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
            loop.extra["space"] = {"affine": volume_affine(image, 0).tolist(), "spatial_shape": list(image.shape[2:])}
        return _train_step(loop, batch["image"].to(run.device), position, loss_fn, generator,
                                 discriminator, criterion, adversarial)

    def evaluate(epoch: int) -> dict[str, float] | None:
        if not evaluation_due(epoch, config["eval_every"], config["epochs"]):
            return None
        evaluation = evaluate_split(run, network, data.split("val", train=False))
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
