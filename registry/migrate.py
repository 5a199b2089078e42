"""Schema migrations as an explicit step (``idis migrate``), never on import.

Alembic runs from the installed :mod:`migrations` package through the same async drivers as the
stores, so neither an ``alembic.ini`` nor a synchronous database driver is needed.  Both
functions run their own event loop: call them from synchronous code, not from a coroutine.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("path_separator", "os")
    # Config values go through configparser interpolation: a percent-encoded password must
    # have its '%' doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` (``sqlite:///...`` or ``postgresql://...``) to ``revision``."""
    command.upgrade(_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` (``"base"`` drops the whole schema)."""
    command.downgrade(_config(url), revision)
