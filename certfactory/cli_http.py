"""HTTP commands: serve (API, repository, /metrics), revoke, agency API keys (issue 7)."""

from __future__ import annotations

import click


def register(main: click.Group, agencies: click.Group) -> None:
    """Adds this module's commands to the ``certfactory`` group and its ``agencies`` subgroup."""
    return None
