"""Conditioning tables: subjects -> conditioning vectors, with mappings fitted on the training subjects.

A csv/tsv keyed by ``subject``, per-variable min-max / z-score / quantile equalisation fitted on
the training subjects, with statistics that round-trip through JSON (`state_dict`) so sampling
uses the same mapping.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from brainsynth.core.data import Variable
from brainsynth.core.errors import DataError, RecipeError
from brainsynth.core.schema import did_you_mean

from .subjects import read_table, rename_hint, subject_name

MISSING_VALUES = frozenset({"", "nan", "na", "n/a", "null", "none"})
SUBJECT_COLUMN = "subject"
WEIGHT_COLUMN = "weight"

Value = int | float | str


def _parse(text: str) -> Value:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING_VALUES
    return isinstance(value, float) and math.isnan(value)


def _level_key(value: Any) -> tuple[int, Any]:
    """Numbers compare by value (1 == 1.0 == "1"); other strings as text."""
    if isinstance(value, str):
        value = _parse(value.strip())
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, float(value))
    return (1, str(value))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclasses.dataclass
class VariableMapping:
    """A variable's fitted encoding: raw value <-> the number the network sees.

    Continuous: ``(value - offset) / scale`` (min-max to [0, 1] or z-score), or, with
    ``equalize``, the piecewise-linear empirical CDF of the training values (uniform on [0, 1],
    ties sharing their mean rank, extended linearly beyond the training range) so that it is a
    bijection with an exact inverse. Categorical: the index of the value among the sorted
    training levels (numbers first, then strings).
    """

    variable: Variable
    levels: list[Value] | None = None
    offset: float = 0.0
    scale: float = 1.0
    knots: list[float] | None = None
    quantiles: list[float] | None = None
    minimum: float | None = None
    """A continuous variable's smallest training value (None in mappings saved before it was kept)."""
    maximum: float | None = None
    """A continuous variable's largest training value."""

    @property
    def column(self) -> str:
        return self.variable.column

    @property
    def cardinality(self) -> int | None:
        """Number of levels of a categorical variable, None for a continuous one."""
        return None if self.levels is None else len(self.levels)

    @classmethod
    def fit(cls, variable: Variable, values: Sequence[Value], where: str) -> VariableMapping:
        """Fit on the training values of `variable` (`where` names the table for messages)."""
        if variable.kind == "categorical":
            if variable.equalize:
                raise RecipeError(
                    f"conditioning variable '{variable.column}': equalize applies to continuous variables only."
                )
            unique: dict[tuple, Value] = {}
            for value in values:
                unique.setdefault(_level_key(value), value)
            return cls(variable, levels=[unique[key] for key in sorted(unique)])
        if variable.kind != "continuous":
            raise RecipeError(
                f"conditioning variable '{variable.column}': kind must be 'continuous' or 'categorical', "
                f"got {variable.kind!r}."
            )
        numbers = np.array([_as_number(v, variable.column, where) for v in values], dtype=np.float64)
        if np.unique(numbers).size < 2:
            raise DataError(
                f"{where}: column '{variable.column}' has a single value over the training subjects, so it "
                "cannot condition anything. Drop the variable or check the table."
            )
        span = {"minimum": float(numbers.min()), "maximum": float(numbers.max())}
        if variable.equalize:
            ordered = np.sort(numbers)
            knots, first = np.unique(ordered, return_index=True)
            counts = np.diff(np.append(first, ordered.size))
            mean_rank = first + (counts - 1) / 2.0
            return cls(variable, knots=knots.tolist(), quantiles=(mean_rank / (ordered.size - 1)).tolist(), **span)
        if variable.normalize == "minmax":
            return cls(variable, offset=float(numbers.min()), scale=float(numbers.max() - numbers.min()), **span)
        if variable.normalize == "zscore":
            return cls(variable, offset=float(numbers.mean()), scale=float(numbers.std()), **span)
        if variable.normalize == "none":
            return cls(variable, **span)
        raise RecipeError(
            f"conditioning variable '{variable.column}': normalize must be 'minmax', 'zscore' or 'none', "
            f"got {variable.normalize!r}."
        )

    def encode(self, values: Sequence[Any] | np.ndarray, where: str = "") -> np.ndarray:
        """Raw values -> codes (float64)."""
        if self.levels is not None:
            index = {_level_key(level): i for i, level in enumerate(self.levels)}
            codes = []
            for value in values:
                key = _level_key(value)
                if key not in index:
                    raise DataError(
                        f"{where + ': ' if where else ''}conditioning column '{self.column}' has value {_show(value)}, "
                        f"which was not seen in training. Known values: {', '.join(_show(v) for v in self.levels)}."
                    )
                codes.append(index[key])
            return np.asarray(codes, dtype=np.float64)
        numbers = np.array([_as_number(v, self.column, where) for v in values], dtype=np.float64)
        if self.knots is not None:
            return _piecewise_linear(numbers, np.asarray(self.knots), np.asarray(self.quantiles))
        return (numbers - self.offset) / self.scale

    def decode(self, codes: Sequence[float] | np.ndarray) -> list[Value]:
        """Codes -> raw values; the exact inverse of `encode` (categorical codes are rounded)."""
        codes = np.asarray(codes, dtype=np.float64)
        if self.levels is not None:
            indices = np.clip(np.rint(codes), 0, len(self.levels) - 1).astype(int)
            return [self.levels[i] for i in indices]
        if self.knots is not None:
            return _piecewise_linear(codes, np.asarray(self.quantiles), np.asarray(self.knots)).tolist()
        return (codes * self.scale + self.offset).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {
            "variable": dataclasses.asdict(self.variable),
            "levels": self.levels,
            "offset": self.offset,
            "scale": self.scale,
            "knots": self.knots,
            "quantiles": self.quantiles,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }

    def outside_training_range(self, values: Sequence[Any]) -> str | None:
        """A sentence naming the given values outside the training range, or None (always None for
        categorical variables, whose unseen levels `encode` refuses, and for older mappings)."""
        if self.levels is not None or self.minimum is None or self.maximum is None:
            return None
        numbers = [_as_number(v, self.column, "sample-time values") for v in values]
        outside = sorted({n for n in numbers if n < self.minimum or n > self.maximum})
        if not outside:
            return None
        shown = ", ".join(f"{n:g}" for n in outside[:5]) + (", ..." if len(outside) > 5 else "")
        return (
            f"'{self.column}' = {shown} lies outside the prior's training range [{self.minimum:g}, {self.maximum:g}]; "
            f"the prior never saw such values, so these samples extrapolate."
        )

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> VariableMapping:
        fields = dict(state)
        return cls(variable=Variable(**fields.pop("variable")), **fields)


def _as_number(value: Any, column: str, where: str) -> float:
    if isinstance(value, str):
        value = _parse(value.strip())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(
            f"{where + ': ' if where else ''}continuous conditioning column '{column}' has value {_show(value)}, "
            "which is not a number. Fix the value, or declare the variable kind: categorical."
        )
    return float(value)


def _piecewise_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp`` continued linearly past both ends (so it stays a bijection)."""
    y = np.interp(x, xp, fp)
    low, high = x < xp[0], x > xp[-1]
    y[low] = fp[0] + (x[low] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[high] = fp[-1] + (x[high] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def _stack(columns: list[np.ndarray], count: int) -> torch.Tensor:
    if not columns:
        return torch.zeros(count, 0)
    return torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))


def _as_variable(variable: Variable | Mapping[str, Any]) -> Variable:
    if isinstance(variable, Variable):
        return variable
    if isinstance(variable, Mapping):
        return Variable(**variable)
    if dataclasses.is_dataclass(variable):
        return Variable(**dataclasses.asdict(variable))
    raise RecipeError(f"a conditioning variable must be a mapping with a 'column', got {variable!r}.")


class ConditioningTable:
    """Conditioning values of subjects, encoded by mappings fitted on the training subjects.

    Build it with `read` (from a csv/tsv) or `from_state_dict` (from a run, to sample or score
    with the mapping the model was trained with; it then has no rows, only `encode`/`decode`).
    Rows are keyed by the ``subject`` column, matched on the file name with or without
    ``.nii``/``.nii.gz``/``.npy``. A subject with a missing or NaN value in a used column (or
    in ``weight``, when weights are asked for) is dropped and listed in `dropped` / `report()`;
    a subject with no row at all is an error unless ``missing="drop"``.
    """

    def __init__(
        self,
        variables: Sequence[Variable],
        mappings: Sequence[VariableMapping] = (),
        *,
        path: Path | None = None,
        rows: Mapping[str, Mapping[str, str]] | None = None,
        weights: bool = False,
        subjects: Sequence[str] = (),
    ) -> None:
        self._variables = list(variables)
        self.mappings = list(mappings)
        """One fitted mapping per variable, in the order of `variables`."""
        self.path = path
        self._rows = dict(rows) if rows is not None else None
        self.uses_weights = weights
        self.subjects = list(subjects)
        """The training subjects the mappings were fitted on (those kept)."""
        self.dropped: dict[str, str] = {}
        """Subject -> why it was dropped (no row, or a missing value in a column)."""

    # ---- reading ----------------------------------------------------------------------------

    @classmethod
    def read(
        cls,
        path: str | os.PathLike,
        variables: Sequence[Variable | Mapping[str, Any]],
        subjects: Sequence[str] | None = None,
        *,
        missing: Literal["error", "drop"] = "error",
        weights: bool = False,
    ) -> ConditioningTable:
        """Read `path` and fit each variable's mapping on the rows of `subjects` (all rows if None).

        `weights` requires a ``weight`` column (positive numbers) for weighted sampling.
        """
        path = Path(path)
        variables = [_as_variable(v) for v in variables]
        header, raw_rows = read_table(path)
        if SUBJECT_COLUMN not in header:
            raise DataError(
                f"{path}: no '{SUBJECT_COLUMN}' column; it must hold each subject's file name (with or without "
                f"extension).{rename_hint(SUBJECT_COLUMN, header)} Columns: {', '.join(header)}."
            )
        for variable in variables:
            if variable.column == SUBJECT_COLUMN or variable.column not in header:
                raise DataError(
                    f"{path}: conditioning column '{variable.column}' is not in the table."
                    f"{did_you_mean(variable.column, header)} "
                    f"Columns: {', '.join(c for c in header if c != SUBJECT_COLUMN)}."
                )
        if len({v.column for v in variables}) != len(variables):
            raise RecipeError(f"conditioning variables name a column twice: {', '.join(v.column for v in variables)}.")
        if weights and WEIGHT_COLUMN not in header:
            raise DataError(
                f"{path}: weighted sampling needs a '{WEIGHT_COLUMN}' column.{rename_hint(WEIGHT_COLUMN, header)} "
                "Add one, or turn weighted sampling off."
            )
        rows: dict[str, dict[str, str]] = {}
        lines: dict[str, int] = {}
        for number, row in enumerate(raw_rows, start=2):
            if not row[SUBJECT_COLUMN]:
                raise DataError(f"{path}, line {number}: empty '{SUBJECT_COLUMN}'.")
            key = subject_name(row[SUBJECT_COLUMN])
            if key in rows:
                raise DataError(
                    f"{path}: subject '{key}' has two rows (lines {lines[key]} and {number}). Keep one."
                )
            rows[key], lines[key] = row, number
        table = cls(variables, path=path, rows=rows, weights=weights)
        fit_subjects = list(rows) if subjects is None else [subject_name(s) for s in subjects]
        kept = table.select(fit_subjects, missing=missing)
        if not kept:
            dropped = "; ".join(f"{subject}: {reason}" for subject, reason in sorted(table.dropped.items()))
            raise DataError(
                f"{path}: no training subject is left to fit the conditioning on (dropped {dropped or 'none'})."
            )
        where = str(path)
        table.mappings = [VariableMapping.fit(v, [_parse(rows[s][v.column]) for s in kept], where) for v in variables]
        table.subjects = kept
        return table

    @property
    def variables(self) -> list[Variable]:
        return list(self._variables)

    @property
    def columns(self) -> list[str]:
        return [v.column for v in self.variables]

    @property
    def cardinalities(self) -> list[int | None]:
        """Per variable: the number of categorical levels, or None when continuous."""
        return [m.cardinality for m in self.mappings]

    @property
    def num_levels(self) -> dict[str, int]:
        """Categorical column -> number of levels (what embedding tables are sized by)."""
        return {m.column: m.cardinality for m in self.mappings if m.cardinality is not None}

    def to_columns(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split codes [N, V] into ``{column: [N]}``: int64 level indices or float32 values.

        NaN codes (a variable not given, see `encode_many(partial=True)`) stay NaN; a categorical
        column holding any then stays float, since NaN is what marks the null rows.
        """
        codes = torch.as_tensor(codes).reshape(-1, len(self.mappings))
        columns = {}
        for i, m in enumerate(self.mappings):
            column = codes[:, i]
            if m.cardinality is not None and not torch.isnan(column).any():
                columns[m.column] = column.round().long()
            else:
                columns[m.column] = column.float()
        return columns

    def mapping(self, column: str) -> VariableMapping:
        for m in self.mappings:
            if m.column == column:
                return m
        raise DataError(
            f"no conditioning variable '{column}'.{did_you_mean(column, self.columns)} "
            f"Variables: {', '.join(self.columns)}."
        )

    def _require_rows(self) -> dict[str, Mapping[str, str]]:
        if self._rows is None:
            raise DataError(
                "this conditioning mapping was restored without its table, so it cannot look subjects up; "
                "give explicit values instead."
            )
        return self._rows  # type: ignore[return-value]

    def select(self, subjects: Sequence[str], missing: Literal["error", "drop"] = "error") -> list[str]:
        """The subjects (in order) that have a row with every used value; drops go to `dropped`."""
        rows = self._require_rows()
        needed = self.columns + ([WEIGHT_COLUMN] if self.uses_weights else [])
        kept = []
        for subject in subjects:
            key = subject_name(subject)
            row = rows.get(key)
            if row is None:
                if missing == "error":
                    raise DataError(
                        f"{self.path}: subject '{key}' has no row (the '{SUBJECT_COLUMN}' column must hold its "
                        "file name, with or without extension). Add a row, or drop such subjects (missing: drop)."
                    )
                self.dropped[key] = "no row in the table"
                continue
            empty = [c for c in needed if _is_missing(row[c])]
            if empty:
                self.dropped[key] = "missing value in " + ", ".join(f"'{c}'" for c in empty)
                continue
            kept.append(key)
        return kept

    def report(self) -> str:
        """One line per dropped subject, or a line saying none was dropped."""
        if not self.dropped:
            return "conditioning: no subject dropped."
        lines = [f"conditioning: dropped {len(self.dropped)} subject(s) from {self.path}:"]
        lines += [f"  {subject}: {reason}" for subject, reason in sorted(self.dropped.items())]
        return "\n".join(lines)

    # ---- encoding ---------------------------------------------------------------------------

    def raw_values(self, subject: str) -> dict[str, Value]:
        """The table's values of `subject` for the used columns."""
        rows = self._require_rows()
        key = subject_name(subject)
        if key not in rows:
            raise DataError(f"{self.path}: subject '{key}' has no row. Add a row, or leave the subject out.")
        return {c: _parse(rows[key][c]) for c in self.columns}

    def encode_subjects(self, subjects: Sequence[str]) -> torch.Tensor:
        """Codes of `subjects` from the table, [N, V] float32 (categorical: level indices)."""
        raw = [self.raw_values(s) for s in subjects]
        columns = [m.encode([r[m.column] for r in raw], where=f"{self.path}") for m in self.mappings]
        return _stack(columns, len(subjects))

    def encode(self, values: Mapping[str, Any]) -> torch.Tensor:
        """Codes of one explicit set of values (given at sample time), [V] float32."""
        return self.encode_many([values])[0]

    def encode_many(self, rows: Sequence[Mapping[str, Any]], partial: bool = False) -> torch.Tensor:
        """Codes of explicit values, [N, V] float32; no unknown key, and every variable given
        unless `partial` (a prior trained with conditioning dropout), where a variable not given
        is encoded as NaN: its null vector."""
        for row in rows:
            unknown = [k for k in row if k not in self.columns]
            if unknown:
                raise DataError(
                    f"unknown conditioning variable '{unknown[0]}'.{did_you_mean(unknown[0], self.columns)} "
                    f"The model was trained with: {', '.join(self.columns)}."
                )
            absent = [c for c in self.columns if c not in row or _is_missing(row[c])]
            if absent and not partial:
                raise DataError(
                    f"no value given for conditioning variable(s) {', '.join(absent)}. The model needs all of: "
                    f"{', '.join(self.columns)} (it was trained without conditioning.dropout, so it has no null vectors)."
                )
        columns = []
        for m in self.mappings:
            given = [i for i, row in enumerate(rows) if m.column in row and not _is_missing(row[m.column])]
            column = np.full(len(rows), np.nan)
            if given:
                column[given] = m.encode([rows[i][m.column] for i in given], where="sample-time values")
            columns.append(column)
        return _stack(columns, len(rows))

    def outside_training_range(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """One sentence per continuous variable with given values outside its training range."""
        notes = []
        for m in self.mappings:
            given = [row[m.column] for row in rows if m.column in row and not _is_missing(row[m.column])]
            note = m.outside_training_range(given) if given else None
            if note:
                notes.append(note)
        return notes

    def decode(self, codes: torch.Tensor | Sequence[float]) -> dict[str, Value]:
        """Raw values from one code vector [V] (the inverse of `encode`)."""
        codes = np.asarray(torch.as_tensor(codes, dtype=torch.float64)).reshape(-1)
        return {m.column: m.decode([c])[0] for m, c in zip(self.mappings, codes)}

    def weights(self, subjects: Sequence[str]) -> torch.Tensor:
        """The ``weight`` column of `subjects`, [N] float64, for weighted sampling."""
        rows = self._require_rows()
        if not self.uses_weights:
            raise DataError(f"{self.path}: weights were not requested when the table was read (weights=True).")
        out = []
        for subject in subjects:
            key = subject_name(subject)
            value = _parse(rows[key][WEIGHT_COLUMN]) if key in rows else None
            if isinstance(value, str) or value is None or not math.isfinite(value) or value < 0:
                raise DataError(
                    f"{self.path}: subject '{key}' has weight {rows.get(key, {}).get(WEIGHT_COLUMN)!r}; "
                    "weights must be finite numbers >= 0."
                )
            out.append(float(value))
        weights = torch.tensor(out, dtype=torch.float64)
        if len(out) and float(weights.sum()) <= 0:
            raise DataError(f"{self.path}: every weight is 0; weighted sampling needs some positive weights.")
        return weights

    # ---- persistence ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The fitted mappings as plain JSON-able data (saved into runs and checkpoints)."""
        return {"version": 1, "mappings": [m.to_dict() for m in self.mappings], "weights": self.uses_weights}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ConditioningTable:
        """The mapping a run was trained with, without its table."""
        try:
            mappings = [VariableMapping.from_dict(m) for m in state["mappings"]]
        except (KeyError, TypeError) as exc:
            raise DataError(
                f"the saved conditioning mapping is malformed ({exc!r}); was it written by brainsynth?"
            ) from exc
        return cls([m.variable for m in mappings], mappings, weights=bool(state.get("weights", False)))

