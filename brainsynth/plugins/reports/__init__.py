"""Evaluation reports: a self-contained HTML page, PNG figures, and a JSON/markdown summary.

``from brainsynth.plugins.reports import ReportInputs, write_report`` (see `html_report`), and the
``brainsynth report`` command (see `command`). matplotlib is imported only when a report is
written, not each time the CLI starts.
"""

from brainsynth.core.hookspecs import hookimpl

__all__ = ["ReportInputs", "write_report"]


def __getattr__(name: str):
    if name in __all__:
        from . import html_report

        return getattr(html_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_commands(cli):
    from .command import add_commands

    add_commands(cli)
