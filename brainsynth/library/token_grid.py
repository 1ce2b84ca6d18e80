"""The token grid of a recipe's volumes, known before any data is read (``--dry-run``, ``validate``).

A tokenizer task checks its ROI with it and a prior sizes its sequence with it, so both read
``data.roi`` the same way.
"""

from __future__ import annotations

from typing import Any

from brainsynth.library.volume_transforms import transform_settings


def roi_size(data: dict[str, Any] | None) -> tuple[int, ...] | None:
    """The spatial size every volume is cropped/padded to (``data.roi``), or None."""
    roi = (data or {}).get("roi")
    if roi is None:
        return None
    return tuple(int(s) for s in transform_settings(roi=roi).roi.size)


def shape_text(shape: tuple[int, ...]) -> str:
    """``48x60x52``: a shape as messages write it."""
    return "x".join(str(int(s)) for s in shape)
