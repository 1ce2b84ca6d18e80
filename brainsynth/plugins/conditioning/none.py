"""No conditioning: the prior models the token distribution of the whole cohort."""

from __future__ import annotations

from brainsynth.core.data import Variable
from brainsynth.core.prior import Conditioning


class NoConditioning(Conditioning):
    """Unconditional prior; listed variables (if any) are ignored."""

    placement = "none"

    def __init__(self, variables: list[Variable] | None = None, table: str | None = None) -> None:
        super().__init__(variables or [], 0)
        self.table = table
