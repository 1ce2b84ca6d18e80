"""Everything a prior run is built from: data, tokenizer, ordering, conditioning table and network.

One builder serves every mode, so training, sampling and scoring cannot disagree about the
token grid, the vocabulary, the order tokens are read in, or how a subject's values are encoded;
`assemble_prior`, the part that wires ordering, conditioning and network, also serves
``--dry-run`` (and ``import-checkpoint`` builds through `build_prior_parts`).
In ``train`` the conditioning normalisation is fitted on the training subjects; in ``sample`` and
``likelihood`` it comes back from the checkpoint (`saved`), as does the ordering's permutation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from brainsynth.core.data import DataSource
from brainsynth.library.conditioning_table import ConditioningTable
from brainsynth.library.subjects import subject_name
from brainsynth.core.errors import DataError, RecipeError, RunError
from brainsynth.core.ordering import Ordering
from brainsynth.core.prior import Conditioning, Prior, as_variables, teacher_forcing_inputs
from brainsynth.core.registry import Registry
from brainsynth.core.runner import Run
from brainsynth.library.trained_tokenizer import TrainedTokenizer, load_tokenizer

ModuleT = TypeVar("ModuleT")


class ConditionedItems(torch.utils.data.Dataset):
    """The kept subjects of a split, each item carrying its encoded conditioning values [V]."""

    def __init__(self, base: torch.utils.data.Dataset, indices: Sequence[int], codes: torch.Tensor | None) -> None:
        self.base = base
        self.indices = list(indices)
        self.codes = codes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[self.indices[index]])
        if self.codes is not None:
            item["conditioning"] = self.codes[index]
        return item


@dataclasses.dataclass
class PriorParts:
    """The built pieces of a prior run, and the glue between data batches and the network."""

    run: Run
    data: DataSource
    tokenizer_source: Path | None
    num_embeddings: int
    grid: tuple[int, ...]
    ordering: Ordering
    table: ConditioningTable | None
    table_path: Path | None
    conditioning: Conditioning
    network: Prior
    _tokenizer: TrainedTokenizer | None = None

    # -- facts ---------------------------------------------------------------------------------
    @property
    def conditioned(self) -> bool:
        return self.conditioning.placement != "none" and bool(self.conditioning.columns)

    @property
    def length(self) -> int:
        """Tokens per brain: every cell of the grid, once, in the ordering's order."""
        return math.prod(self.grid)

    @property
    def on_the_fly(self) -> bool:
        """True when the data are volumes that the frozen tokenizer turns into tokens each batch."""
        return getattr(self.data, "grid", None) is None

    @property
    def tokenizer(self) -> TrainedTokenizer:
        if self._tokenizer is None:
            tokenizer = _load_tokenizer(self.run, self.tokenizer_source)
            trained_roi = tokenizer.recipe is not None and (tokenizer.recipe["data"] or {}).get("roi") is not None
            if not self.on_the_fly and trained_roi and tokenizer.spatial_shape is not None:
                expected = tuple(int(g) for g in tokenizer.grid())
                if tuple(self.grid) != expected:
                    raise RunError(
                        f"the prior reads {'x'.join(map(str, self.grid))} token grids, but the tokenizer of "
                        f"{tokenizer.directory} was trained on {'x'.join(map(str, tokenizer.spatial_shape))} volumes, "
                        f"whose grid is {'x'.join(map(str, expected))}. Set tokenizer.run to the tokenizer that "
                        "extracted the prior's token grids."
                    )
            self._tokenizer = tokenizer
        return self._tokenizer

    def describe(self) -> str:
        parameters = sum(p.numel() for p in self.network.parameters())
        what = (
            f"conditioned on {', '.join(self.conditioning.columns)} ({self.run.recipe['conditioning']['name']}, "
            f"table {self.table_path}{self._dropout()})"
            if self.conditioned
            else "unconditioned"
        )
        source = "volumes tokenized on the fly" if self.on_the_fly else "pre-extracted token grids"
        return (
            f"prior: {self.length} tokens per brain ({'x'.join(map(str, self.grid))} grid, "
            f"{self.run.recipe['ordering']['name']} order), vocabulary {self.num_embeddings} + BOS, {what}, "
            f"{source}, {parameters / 1e6:.2f} M parameters"
        )

    def _dropout(self) -> str:
        """How conditioning dropout trains the null vectors (empty without dropout)."""
        embed = getattr(self.conditioning, "embed", None)
        if not getattr(self.conditioning, "has_nulls", False) or embed is None:
            return ""
        return f", dropout {embed.dropout:g} ({embed.dropout_mode}): null vectors for guidance and partial conditioning"

    def saved_state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the weights, so sampling reads data as training did."""
        return {
            "ordering": self.ordering.state_dict() if hasattr(self.ordering, "state_dict") else None,
            "conditioning": self.table.state_dict() if self.table is not None else None,
            "conditioning_table": str(self.table_path) if self.table_path is not None else None,
            "grid": list(self.grid),
            "num_embeddings": self.num_embeddings,
        }

    # -- data ----------------------------------------------------------------------------------
    def dataset(self, split: str) -> ConditionedItems:
        """The split's subjects that have conditioning values (all of them when unconditioned)."""
        subjects = self.data.subjects(split)
        base = self.data.split(split, train=split == "train")
        if self.table is None:
            return ConditionedItems(base, range(len(subjects)), None)
        kept = set(self.table.select([s.name for s in subjects], missing=self.run.recipe["train"]["missing"]))
        indices = [i for i, s in enumerate(subjects) if subject_name(s.name) in kept]
        if not indices:
            raise DataError(f"{self.table_path}: no subject of the '{split}' split has conditioning values.")
        dropped = len(subjects) - len(indices)
        if dropped:
            self.run.say(f"{split}: {dropped} subject(s) left out for missing conditioning.\n{self.table.report()}")
        codes = self.table.encode_subjects([subjects[i].name for i in indices]) if self.conditioned else None
        return ConditionedItems(base, indices, codes)

    def weights(self, split: str, dataset: ConditionedItems) -> torch.Tensor:
        """The table's ``weight`` of each item of `dataset` (for weighted sampling)."""
        names = [self.data.subjects(split)[i].name for i in dataset.indices]
        return self.table.weights(names)

    def tokens(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        """[B, *grid] token ids of a batch: as stored, or encoded now by the frozen tokenizer."""
        if "tokens" in batch:
            return batch["tokens"].to(device)
        image = batch["image"]
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        with torch.no_grad():
            return self.tokenizer.network.encode_tokens(image.to(device))

    def values(self, codes: torch.Tensor | None, device: torch.device) -> dict[str, torch.Tensor] | None:
        """Encoded codes [B, V] -> the network's ``{column: tensor [B]}`` (None when unconditioned)."""
        if not self.conditioned or codes is None:
            return None
        return {column: value.to(device) for column, value in self.table.to_columns(codes).items()}

    def batch(self, batch: Mapping[str, Any], device: torch.device):
        """Teacher-forcing inputs [B, L], targets [B, L] and conditioning values of a batch."""
        target = self.ordering.sequence(self.tokens(batch, device))
        inputs = teacher_forcing_inputs(target, self.num_embeddings)  # BOS: the last id
        return inputs, target, self.values(batch.get("conditioning"), device)


def build_prior_parts(run: Run, *, fit_split: str | None = None, saved: Mapping[str, Any] | None = None) -> PriorParts:
    """Build the run's pieces: fit the conditioning on `fit_split`, or restore it from `saved`."""
    recipe = run.recipe
    data = run.build("data")
    tokenizer_source = recipe["tokenizer"]["run"] or getattr(data, "tokenizer_run", None)
    tokenizer_source = Path(tokenizer_source) if tokenizer_source else None
    tokenizer = None
    if getattr(data, "grid", None) is not None:
        num_embeddings, grid = int(data.num_embeddings), tuple(int(g) for g in data.grid)
    else:
        tokenizer = _load_tokenizer(run, tokenizer_source)
        if data.roi_size is None:
            raise RecipeError(
                f"{recipe.source}: data: tokens on the fly need every volume at one size; set data.roi "
                "(or train on pre-extracted token grids: data: {name: tokens, ...})."
            )
        num_embeddings, grid = tokenizer.num_embeddings, tuple(tokenizer.network.check_spatial_shape(data.roi_size))
    if saved is not None and (list(saved.get("grid", grid)) != list(grid) or saved.get("num_embeddings", num_embeddings) != num_embeddings):
        raise RunError(
            f"the checkpoint's prior reads {'x'.join(map(str, saved['grid']))} grids of {saved['num_embeddings']} codes; "
            f"this recipe's data gives {'x'.join(map(str, grid))} grids of {num_embeddings} codes. Use the data "
            "and tokenizer the prior was trained with."
        )

    block = recipe["conditioning"]
    variables = as_variables(block.get("variables"))
    table, table_path = None, None
    if uses_conditioning_table(recipe):
        given = conditioning_table_path(recipe, data)
        if saved is not None and saved.get("conditioning_table") and not block.get("table"):
            given = saved["conditioning_table"]
        if given is None:
            raise RecipeError(
                f"{recipe.source}: conditioning: no table of subject values; set conditioning.table to a csv/tsv "
                "with a 'subject' column and one column per variable."
            )
        table_path = Path(given)
        if saved is not None and saved.get("conditioning") is not None:
            table = _restore_table(saved["conditioning"], table_path)
            if table.columns != [v.column for v in variables]:
                raise RunError(
                    f"the checkpoint was trained conditioned on {', '.join(table.columns) or 'nothing'}; this "
                    f"recipe's conditioning.variables name {', '.join(v.column for v in variables) or 'nothing'}."
                )
        else:
            if not table_path.is_file():
                raise DataError(f"{table_path}: conditioning table not found (conditioning.table).")
            fit = [s.name for s in data.subjects(fit_split or "train")]
            table = read_conditioning_table(recipe, table_path, fit)

    ordering, conditioning, network = assemble_prior(
        recipe, run.registry, num_embeddings=num_embeddings, grid=grid,
        num_levels=table.num_levels if table is not None else {},
        ordering_state=saved.get("ordering") if saved is not None else None,
    )
    network = network.to(run.device)
    return PriorParts(
        run=run, data=data, tokenizer_source=tokenizer_source, num_embeddings=num_embeddings, grid=grid,
        ordering=ordering, table=table, table_path=table_path, conditioning=conditioning, network=network,
        _tokenizer=tokenizer,
    )


def uses_conditioning_table(recipe) -> bool:
    """True when the recipe reads the conditioning table: variables to condition on, or weighted sampling."""
    block = recipe["conditioning"]
    return (block["name"] != "none" and bool(as_variables(block.get("variables")))) or recipe["train"]["weighted"]


def conditioning_table_path(recipe, data: Any = None) -> str | None:
    """The conditioning table a recipe names: ``conditioning.table``, else its data's (token grids record it)."""
    return recipe["conditioning"].get("table") or getattr(data, "conditioning_table", None)


def read_conditioning_table(recipe, path: str | Path, subjects: Sequence[str] | None) -> ConditioningTable:
    """The table with each variable's mapping fitted on `subjects` as training fits it; on every row
    when the subjects are not known (``--dry-run`` before the data exist: incomplete rows are dropped)."""
    missing = recipe["train"]["missing"] if subjects is not None else "drop"
    variables = as_variables(recipe["conditioning"].get("variables"))
    return ConditioningTable.read(path, variables, subjects, missing=missing, weights=recipe["train"]["weighted"])


def _build(make: Callable[[], ModuleT]) -> ModuleT:
    return make()


def assemble_prior(
    recipe, registry: Registry, *, num_embeddings: int, grid: Sequence[int], num_levels: Mapping[str, int],
    ordering_state: Mapping[str, Any] | None = None, build: Callable[[Callable[[], Any]], Any] = _build,
) -> tuple[Ordering, Conditioning, Prior]:
    """The ordering, conditioning and network of a prior recipe: the one place they are wired.

    Runs (`build_prior_parts`) and ``--dry-run`` (which passes `build_without_weights` as `build`)
    both come here, so they cannot size a different prior. The order of construction (ordering,
    conditioning, network) is the order random initial weights are drawn in; keep it.
    """
    block = recipe["conditioning"]
    model_dim = recipe["network"].get("dim")
    if uses_conditioning_table(recipe) and block["name"] != "none" and model_dim is None and block.get("dim") is None:
        raise RecipeError(f"{recipe.source}: conditioning.dim: this network has no 'dim'; give the conditioning width.")
    ordering = registry.build("ordering", recipe["ordering"], spatial_shape=tuple(grid))
    if ordering_state is not None and hasattr(ordering, "load_state_dict"):
        ordering.load_state_dict(ordering_state)
    conditioning = build(lambda: registry.build("conditioning", block, model_dim=model_dim, num_levels=dict(num_levels)))
    network = build(lambda: registry.build(
        "prior", recipe["network"], num_tokens=num_embeddings + 1, max_seq_len=math.prod(grid), ordering=ordering,
        conditioning=conditioning,
    ))
    return ordering, conditioning, network


def _restore_table(state: Mapping[str, Any], path: Path) -> ConditioningTable:
    """The run's saved mapping; with the table's rows too when the file is still there."""
    saved = ConditioningTable.from_state_dict(state)
    if not path.is_file():
        return saved  # explicit values still encode; looking subjects up says what is missing
    table = ConditioningTable.read(path, saved.variables, missing="drop")
    table.mappings = saved.mappings
    return table


def _load_tokenizer(run: Run, source: Path | None) -> TrainedTokenizer:
    if source is None:
        raise RecipeError(
            f"{run.recipe.source}: tokenizer.run: this needs the trained tokenizer; set tokenizer.run to its run "
            "directory (token grids written by extract record it in tokens.json)."
        )
    return load_tokenizer(source, run.recipe["tokenizer"]["checkpoint"], run.registry, run.device)


def image_space(parts: PriorParts, split: str, subject: str, item_image: Any = None) -> tuple[tuple[int, ...], np.ndarray]:
    """The image shape and affine a subject's token grid stands for (for maps in image space)."""
    if item_image is not None:
        affine = getattr(item_image, "affine", None)
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        return tuple(int(s) for s in item_image.shape[-3:]), affine
    space = parts.data.space(split, subject) if hasattr(parts.data, "space") else None
    if space is None or space.get("spatial_shape") is None:
        tokenizer = parts.tokenizer
        if tokenizer.spatial_shape is None:
            raise RunError(f"{split}/{subject}: the image space of this token grid is unknown.")
        space = {"spatial_shape": tokenizer.spatial_shape, "affine": tokenizer.affine}
    affine = np.asarray(space.get("affine") if space.get("affine") is not None else np.eye(4), dtype=np.float64)
    return tuple(int(s) for s in space["spatial_shape"]), affine
