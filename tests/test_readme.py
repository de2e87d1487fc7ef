"""The README is the user's manual: every setting documented, every command listed."""

from __future__ import annotations

from pathlib import Path

from certfactory.cli import main
from certfactory.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [f"CERTFACTORY_{name.upper()}" for name in Settings.model_fields
               if f"`CERTFACTORY_{name.upper()}`" not in README]
    assert missing == [], f"README.md's settings table lacks {missing}"


def test_every_command_is_listed() -> None:
    missing = [name for name in main.commands if f"certfactory {name}" not in README]
    assert missing == [], f"README.md's command list lacks {missing}"
