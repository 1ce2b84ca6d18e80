"""Run records: the resolved recipe of each start of a mode, written once and never rewritten.

A run directory keeps what every mode was started with:

* ``recipe.yaml``: the recipe the run was created with (modes ``train`` and ``run``);
* ``recipe.<mode>.yaml``: the recipe of the first start of another mode (``sample``, ``extract``);
* ``recipe[.<mode>].amendment-N.yaml``: a later start whose recipe differs from the mode's last
  record; its first line names the changed keys. Earlier records are kept as they are.

`start` is called when a mode starts. A new run, or another mode's start with a recipe of its
own, is recorded. ``--resume`` compares the recipe with the last record: the same recipe writes
nothing; `HARMLESS` changes (log intervals, more epochs) are recorded as an amendment; any other
change alters the result and is refused with the changed keys, unless ``--allow-changes``.
A start that fails before it produced anything takes its record back (`discard_unless_produced`).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import RunError
from .files import is_temporary, write_bytes_atomic

HARMLESS = {
    ("experiment",),
    ("description",),
    ("device",),
    ("zero",),
    ("train", "log_every"),
    ("train", "eval_every"),
    ("train", "checkpoint_every"),
    ("report",),
}
"""Keys (and key prefixes) whose change leaves a run's result as it is: how the run's folder is
spelled (another folder holds another record), where it runs, how often it logs, validates and
checkpoints, a pipeline's report. ``train.epochs`` is harmless when it
grows (`Change.harmless`); every other key alters the result."""

IGNORED = {("mode",)}
"""Keys never compared: the mode is part of the record's name."""

STAGE = ("stages", int, "recipe")
"""A pipeline stage's recipe lies under ``stages.<i>.recipe``; its keys are judged as a recipe's."""

_MISSING = object()


def _own_key(key: tuple) -> tuple:
    """The key as its recipe knows it (a pipeline stage's keys without ``stages.<i>.recipe``)."""
    if len(key) > 3 and key[0] == "stages" and isinstance(key[1], int) and key[2] == "recipe":
        return key[3:]
    return key


def _dotted(key: tuple) -> str:
    return ".".join(str(part) for part in key)


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


@dataclasses.dataclass(frozen=True)
class Change:
    """One key whose value differs between the recorded recipe and the given one."""

    key: tuple
    old: Any
    new: Any

    @property
    def harmless(self) -> bool:
        own = _own_key(self.key)
        if any(own[: len(prefix)] == prefix for prefix in HARMLESS):
            return True
        if own == ("train", "epochs"):
            return isinstance(self.old, int) and isinstance(self.new, int) and self.new >= self.old
        return False

    def __str__(self) -> str:
        return f"{_dotted(self.key)} ({_shown(self.old)} -> {_shown(self.new)})"


def _leaves(value: Any, key: tuple, out: dict[tuple, Any]) -> dict[tuple, Any]:
    if isinstance(value, dict) and value:
        for name, inner in value.items():
            _leaves(inner, key + (name,), out)
    elif isinstance(value, list) and any(isinstance(inner, (dict, list)) for inner in value):
        for index, inner in enumerate(value):  # stages, variables: compared item by item
            _leaves(inner, key + (index,), out)
    elif key not in IGNORED:
        out[key] = value
    return out


def differences(recorded: dict, given: dict) -> list[Change]:
    """Every key (as a path to a plain value) whose value differs, in the given recipe's order.

    A key only the record has, left unset there (null or 0), is no change: a resolved recipe writes
    every key it has, so that is a key this version no longer has (``momentum: 0.0`` under adam
    before optimizers were components)."""
    old, new = _leaves(recorded, (), {}), _leaves(given, (), {})
    keys = list(new) + [k for k in old if k not in new and old[k] not in (None, 0)]
    return [Change(k, old.get(k, _MISSING), new.get(k, _MISSING)) for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]


def base_name(mode: str, creating: bool) -> str:
    """``recipe`` for the run's own records, ``recipe.<mode>`` for another mode's."""
    return "recipe" if creating else f"recipe.{mode}"


def records(directory: Path, base: str) -> list[Path]:
    """The records of `base` in the order they were written: the first, then each amendment."""
    first = directory / f"{base}.yaml"
    pattern = re.compile(rf"^{re.escape(base)}\.amendment-(\d+)\.yaml$")
    numbered = sorted(
        (int(m.group(1)), p) for p in directory.glob(f"{base}.amendment-*.yaml") if (m := pattern.match(p.name))
    )
    return ([first] if first.is_file() else []) + [p for _, p in numbered]


def _plain(text: str) -> dict:
    data = yaml.safe_load(text) or {}
    return data if isinstance(data, dict) else {}


def changes_since_record(directory: Path, recipe, creating: bool) -> list[Change]:
    """How `recipe` differs from the last record of its mode in `directory` (none when there is no record)."""
    written = records(directory, base_name(recipe.mode, creating))
    return differences(_plain(written[-1].read_text()), _plain(recipe.text())) if written else []


def start(directory: Path, recipe, *, creating: bool, resume: bool, allow_changes: bool) -> Path | None:
    """Check `recipe` against the mode's last record and record it when it is new; returns the file written.

    Refuses (`RunError`, nothing written) a ``--resume`` whose recipe changes the result, unless
    `allow_changes`. `recipe` is a `Recipe`; its text is what is recorded.
    """
    base = base_name(recipe.mode, creating)
    text = recipe.text()
    written = records(directory, base)
    if not written:
        if creating and resume:
            raise RunError(
                f"--resume: {directory} has no {base}.yaml, so it is not a run this version can continue; "
                f"start a new run (--set experiment.name=NAME) or restore its recipe.yaml."
            )
        return write_bytes_atomic(directory / f"{base}.yaml", text.encode())
    last = written[-1]
    changes = differences(_plain(last.read_text()), _plain(text))
    if not changes:
        return None
    altering = [c for c in changes if not c.harmless]
    if creating and altering and not allow_changes:
        raise RunError(
            f"--resume: the recipe differs from the recorded one ({last}) in "
            f"{', '.join(str(c) for c in altering)}; these change the result. Start a new run "
            f"(--set experiment.name=NAME), or pass --allow-changes to record them as an amendment."
        )
    number = len(written)
    path = directory / f"{base}.amendment-{number}.yaml"
    when = datetime.datetime.now().isoformat(timespec="seconds")
    header = (
        f"# amendment {number} of {base}.yaml: changed from {last.name}: {', '.join(str(c) for c in changes)}\n"
        f"# written {when} when mode '{recipe.mode}' started{' with --resume' if resume else ''}; "
        f"the earlier records are kept as they were.\n"
    )
    return write_bytes_atomic(path, (header + text).encode())


# -- a start that produced nothing takes its record back ------------------------------------------
Snapshot = dict[Path, tuple[int, int]]


def snapshot(directory: Path) -> Snapshot:
    """Size and modification time of every file under `directory`."""
    found: Snapshot = {}
    if directory.is_dir():
        for path in directory.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    stat = path.stat()
                    found[path] = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                continue
    return found


def produced(directory: Path, before: Snapshot, record: Path | None) -> bool:
    """True when a file other than `record` was written (non-empty, new or changed) since `before`."""
    for path, state in snapshot(directory).items():
        if path == record or is_temporary(path) or state[0] == 0:
            continue
        if before.get(path) != state:
            return True
    return False


def discard_unless_produced(directory: Path, before: Snapshot, record: Path | None) -> None:
    """Remove `record` when the start that wrote it failed before producing anything."""
    if record is not None and not produced(directory, before, record):
        record.unlink(missing_ok=True)


def resumable(directory: Path, mode: str) -> None:
    """Refuse to --resume a directory that holds no checkpoint and no finished mode (a half-made run).

    Such a directory is left by a start killed before its first checkpoint, or by earlier versions
    after an error that was not brainsynth's own; continuing it would silently train from scratch.
    """
    if any(directory.rglob("*.pt")) or (directory / f"metrics.{mode}.json").is_file():
        return
    raise RunError(
        f"--resume: {directory} holds no checkpoint and no finished mode: its start failed or was "
        f"killed before the first checkpoint, so there is nothing to continue. Remove it (rm -r "
        f"{directory}) and run again (without --resume for a run of its own; a pipeline's --resume "
        f"then starts this stage afresh)."
    )
