"""Errors a user can cause.

Every error raised because of a recipe, a file, a subject or a checkpoint the user supplied is a
`BrainsynthError`. The CLI prints its message alone and exits with code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class BrainsynthError(Exception):
    """An error the user can fix; the message says what is wrong and what to do."""

    exit_code = 2


class RecipeError(BrainsynthError):
    """A recipe key, type, value or component name is wrong."""


class RegistryError(BrainsynthError):
    """A component is unknown, or a name was registered twice."""


class DataError(BrainsynthError):
    """A subject file, table or value cannot be used."""


class CheckpointError(BrainsynthError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class RunError(BrainsynthError):
    """A run directory cannot be created or resumed."""
