"""Errors a user can cause.

Every error raised because of a recipe, a file, a subject or a checkpoint the user supplied is a
`BrainsynthError`. The CLI prints its message alone and exits with code 2. Anything else is a
bug: the CLI prints one line naming the plugin and the component it came from
(`plugin_errors`), exits 1, and shows the traceback with ``--debug``.
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


class BrainsynthWarning(UserWarning):
    """Something works, but worse than it should (e.g. sampling without a cached decoder); the CLI
    prints it as one ``warning:`` line."""
