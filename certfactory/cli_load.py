"""Load commands: loadtest and plan (issue 4)."""

from __future__ import annotations

import click


def register(main: click.Group, agencies: click.Group) -> None:
    """Adds this module's commands to the ``certfactory`` group and its ``agencies`` subgroup."""
    from certfactory.loadtest import loadtest_command
    from certfactory.plan import plan_command

    main.add_command(loadtest_command)
    main.add_command(plan_command)
