"""The ``asyncsync`` command line. Nothing in the package imports this module."""

from __future__ import annotations

import click

from asyncsync import __version__
from asyncsync.cli import audiences, auth, prepare, sandbox, sync


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="asyncsync")
def main() -> None:
    """Stream very large ID exports into TikTok custom audiences, exactly once."""


for _module in (prepare, sync, audiences, auth, sandbox):
    for _command in _module.commands:
        main.add_command(_command)
