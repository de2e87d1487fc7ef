"""Intake commands: template, submit's endorsement options, the agency registry (issue 3)."""

from __future__ import annotations

import click


def register(main: click.Group, agencies: click.Group) -> None:
    """Adds this module's commands to the ``certfactory`` group and its ``agencies`` subgroup."""
    return None
