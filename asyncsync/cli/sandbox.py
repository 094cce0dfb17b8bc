"""CLI commands: sandbox (filled in by its capability)."""

from __future__ import annotations

import click

commands: list[click.Command] = []
