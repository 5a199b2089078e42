"""Searchable template items: the search index keeps only the values of items a template
declares ``"searchable": true`` (see resolver/search.py), a flag no template had before, so
every row written under 0008's rule (every enabled item) goes.

Left in place they would be found by searches for items no longer searchable, and never
removed: a record rewritten under a template without searchable items skips the DELETE of
its index rows.  Records of templates that declare searchable items are indexed again when
next written (as records written before 0008 were).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("DELETE FROM attr_index")


def downgrade() -> None:
    # Nothing to restore: 0008's code indexes each templated record when next written, as it
    # did the records written before 0008.
    pass
