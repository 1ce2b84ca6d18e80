"""Data: subject lists, MONAI transform chains and conditioning tables."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass
class Variable:
    """One conditioning variable, read from a column of the conditioning table."""

    column: str
    kind: Literal["continuous", "categorical"] = "continuous"
    normalize: Literal["minmax", "zscore"] = "minmax"
    equalize: bool = False
