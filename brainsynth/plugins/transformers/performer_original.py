"""Loading the original BrainSynth ``Performer`` wrapper's weights into a `PerformerPrior`.

Both sides wrap the same performer-pytorch 1.1.4 `Performer`, so its tensors (``performer.*``,
including the FAVOR+ projection matrices, the redraw counter and the duplicate
``proj_updater.instance.*`` view of the layers) map by renaming. The wrapper's own tensors
differ in name or size:

* ``token_emb`` / ``to_out`` / ``norm`` are our ``inputs.token_embedding`` / ``to_logits`` / ``norm``;
* the original sized its position tables for L + 1 (+ P) positions although only L (+ P) are ever
  read, so the learned table loses its unused last row;
* its sinusoidal tables (``pos_emb.emb``, ``layer_pos_emb.emb``, fixed spatial ``emb``) and the
  spatial index buffers are persistent; we recompute them, so they are checked against ours (an
  index buffer that differs means another grid or ordering) and their stored values adopted;
* ``conditioning_emb.<i>`` (categorical tables, in the original's variable order) are our
  ``conditioning.embed.embedders.<i>``; continuous variables had no parameters (tiled values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from brainsynth.core.errors import CheckpointError

if TYPE_CHECKING:
    from .performer import PerformerPrior

_TABLE_TOLERANCE = 1e-5
"""How far a stored sinusoidal table may be from ours (float rounding of the same formula)."""


def load_original_performer(prior: PerformerPrior, state: Mapping[str, torch.Tensor]) -> None:
    """Strictly copy an original performer state dict (``module.`` already stripped) into `prior`."""
    ours = prior.state_dict()
    plan: dict[str, tuple[tuple[int, ...], Callable[[torch.Tensor], None]]] = {}
    loaded: dict[str, torch.Tensor] = {}

    def load_as(our_key: str, rows: int | None = None) -> Callable[[torch.Tensor], None]:
        def put(value: torch.Tensor) -> None:
            loaded[our_key] = value[:rows] if rows is not None else value

        return put

    def adopt(original_key: str, buffer: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def put(value: torch.Tensor) -> None:
            value = value[: buffer.shape[0]].to(buffer.dtype)
            if not torch.allclose(value, buffer, rtol=0.0, atol=_TABLE_TOLERANCE):
                raise CheckpointError(
                    f"original key '{original_key}': the stored sinusoidal table differs from the one this recipe "
                    f"computes (max difference {float((value - buffer).abs().max()):.3g}); check dim, dim_head and "
                    f"the grid."
                )
            with torch.no_grad():
                buffer.copy_(value)

        return put

    def same_indices(original_key: str, expected: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def check(value: torch.Tensor) -> None:
            if not torch.equal(value.long().cpu(), expected.long().cpu()):
                raise CheckpointError(
                    f"original key '{original_key}': its spatial indices differ from this recipe's ordering; "
                    f"the ordering (ordering block) or the grid is not the one the original was trained with."
                )

        return check

    inputs = prior.inputs
    total = inputs.total_length
    dim = inputs.dim
    token_key = "inputs.token_embedding.weight"
    plan["token_emb.weight"] = (tuple(ours[token_key].shape), load_as(token_key))
    if inputs.positions == "absolute":
        plan["pos_emb.emb.weight"] = ((total + 1, dim), load_as("inputs.absolute", total))
    elif inputs.positions == "fixed":
        plan["pos_emb.emb"] = ((total + 1, dim), adopt("pos_emb.emb", inputs.fixed))
    if prior.layer_rotary is not None:
        rotary = prior.layer_rotary
        plan["layer_pos_emb.emb"] = ((total + 1, rotary.shape[1]), adopt("layer_pos_emb.emb", rotary))
    if inputs.spatial_mode == "learned":
        raise CheckpointError(
            "network.spatial_pos_emb is true (brainsynth's embedding of the predicted cell); the original's "
            "--spatial_position_emb is network.spatial_pos_emb: absolute or fixed."
        )
    held = inputs.spatial_coordinates if inputs.spatial_mode != "none" else None
    for axis in range(held.shape[1] if held is not None else 0):
        prefix = f"spatial_position_emb.{axis}."
        length = held.shape[0]
        if inputs.spatial_mode == "absolute":
            indices = prefix + "spatial_indices_sequence"
            plan[indices] = ((length,), same_indices(indices, held[:, axis]))
            plan[prefix + "emb.weight"] = ((length, dim), load_as(f"inputs.spatial.{axis}.weight"))
        else:
            plan[prefix + "emb"] = ((length, dim), adopt(prefix + "emb", inputs.spatial_fixed[axis]))
    for key, value in ours.items():
        if key.startswith("layers."):
            plan["performer." + key[len("layers.") :]] = (tuple(value.shape), load_as(key))
        elif key.startswith("norm."):
            plan[key] = (tuple(value.shape), load_as(key))
        elif key.startswith("to_logits."):
            plan["to_out." + key[len("to_logits.") :]] = (tuple(value.shape), load_as(key))
        elif key.startswith("conditioning."):
            plan.update(_conditioning_entry(prior, key, value, load_as))
    unexpected = [key for key in state if key not in plan]
    if unexpected:
        raise CheckpointError(
            f"unexpected key '{unexpected[0]}' in the original performer checkpoint{_more(unexpected)}; "
            f"the recipe's network or conditioning differs from the original's options."
        )
    missing = [key for key in plan if key not in state]
    if missing:
        raise CheckpointError(
            f"missing key '{missing[0]}' in the original performer checkpoint{_more(missing)}; "
            f"the recipe's network or conditioning differs from the original's options."
        )
    for key, (shape, put) in plan.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"original key '{key}' holds {type(value).__name__}, not a tensor.")
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"original key '{key}' has shape {tuple(value.shape)}; this recipe expects {shape}."
            )
        put(value)
    for key in ours:
        if ".proj_updater.instance." in key:  # the same tensors as layers.net.*: both copies must agree
            twin = key.replace(".proj_updater.instance.", ".net.", 1)
            if not torch.equal(loaded[key], loaded[twin]):
                raise CheckpointError(
                    f"original keys '{_original(key)}' and '{_original(twin)}' differ; they must be equal."
                )
    absent = [key for key in ours if key not in loaded]
    if absent:
        raise CheckpointError(f"no original tensor maps onto '{absent[0]}'{_more(absent)}.")
    prior.load_state_dict(loaded, strict=True)


def _conditioning_entry(prior: PerformerPrior, key: str, value: torch.Tensor, load_as) -> dict:
    """``conditioning.embed.embedders.<i>.weight`` of a categorical table <- ``conditioning_emb.<i>.weight``."""
    parts = key.split(".")
    embed = getattr(prior.conditioning, "embed", None)
    if embed is not None and len(parts) == 5 and parts[1:3] == ["embed", "embedders"] and parts[4] == "weight":
        index = int(parts[3])
        if isinstance(embed.embedders[index], nn.Embedding):
            return {f"conditioning_emb.{index}.weight": (tuple(value.shape), load_as(key))}
    raise CheckpointError(
        f"the recipe's conditioning has a parameter '{key}' the original never had: the original tiled each "
        f"continuous value over the width (conditioning.continuous_embedding: tiled)."
    )


def _original(key: str) -> str:
    return "performer." + key[len("layers.") :]


def _more(keys: list) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
