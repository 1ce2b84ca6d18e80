"""The ``brainsynth report`` command (see `command`): evaluate a folder of samples and write a report.

The report writer itself (``ReportInputs``, ``write_report``) is `brainsynth.library.report`, which
the pipeline's report uses too. matplotlib is imported only when a report is written, not each
time the CLI starts.
"""

from brainsynth.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    from .command import add_commands

    add_commands(cli)
