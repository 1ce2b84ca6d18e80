"""Run logs: ``logs/metrics.jsonl``, TensorBoard events and progress bars.

Only rank 0 writes; other ranks get a logger that does nothing, so callers never test the rank.
Progress bars are tqdm bars on a terminal and plain periodic lines otherwise (CI logs, files).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Appends one JSON line per logged step and mirrors scalars to TensorBoard."""

    def __init__(self, directory: str | Path, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self.listeners: list[Callable[[int, str, dict[str, Any]], None]] = []
        """Called with (step, split, metrics) after each `log` (the plugins' ``metrics_logged``)."""
        self._writer = None
        self._jsonl = None
        if enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.directory / "metrics.jsonl", "a", buffering=1)

    @property
    def writer(self):
        """The TensorBoard SummaryWriter, created on first use (it is slow to import)."""
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.directory))
        return self._writer

    def log(self, step: int, metrics: Mapping[str, Any], split: str = "train", **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, **fields}
        record.update({k: _plain(v) for k, v in metrics.items()})
        record["time"] = round(time.time(), 3)
        self._jsonl.write(json.dumps(record) + "\n")
        for key, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{split}/{key}", value, step)
        for listener in self.listeners:
            listener(int(step), split, {k: _plain(v) for k, v in metrics.items()})

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        if self.enabled:
            self.writer.add_text(tag, text, step)

    def log_image(self, tag: str, image, step: int) -> None:
        """`image` is a [C, H, W] or [H, W] array in [0, 1]."""
        if not self.enabled:
            return
        dataformats = "HW" if image.ndim == 2 else "CHW"
        self.writer.add_image(tag, image, step, dataformats=dataformats)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a torn last line from a kill is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class Progress:
    """A progress bar: tqdm on a terminal, a plain line every `every` seconds otherwise."""

    def __init__(self, total: int | None, desc: str, enabled: bool = True, every: float = 10.0, stream=None) -> None:
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.postfix: dict[str, Any] = {}
        self._start = time.monotonic()
        self._last = self._start
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.count += n
        self.postfix.update({k: _plain(v) for k, v in postfix.items()})
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every or (self.total is not None and self.count >= self.total):
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        done = f"{self.count}/{self.total}" if self.total else str(self.count)
        pct = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        post = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        return f"{self.desc}: {done}{pct} {time.monotonic() - self._start:.0f}s {post}".rstrip()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress(iterable: Iterable[T], total: int | None, desc: str, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar."""
    with Progress(total, desc, enabled) as bar:
        for item in iterable:
            yield item
            bar.update()


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr, for data sources and helpers that hold no run."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
