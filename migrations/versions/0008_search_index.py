"""The search index: the values data templates declare (records naming a template at 1001, at
its enabled items), typed; untemplated records have no rows (see resolver/search.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from registry.tables (see 0001).
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
NUMBERED = sa.text("v_num IS NOT NULL")


def upgrade() -> None:
    # Filled by the writes themselves (registry/stores/sql.py, registry/importer.py), never by
    # a trigger: a trigger parsing every record made `idis import` 15-45x slower.  Records
    # written before this revision are indexed when next written.
    op.create_table(
        "attr_index",
        sa.Column("key", KeyText, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("type", KeyText, nullable=False),
        sa.Column("v_text", KeyText, nullable=False),
        sa.Column("v_num", sa.Float(precision=53), nullable=True),
        sa.Column("public", sa.Boolean, nullable=False),
    )
    op.create_index("attr_index_text", "attr_index", ["type", "v_text", "key", "idx"])
    op.create_index(
        "attr_index_num",
        "attr_index",
        ["type", "v_num", "key", "idx"],
        postgresql_where=NUMBERED,
        sqlite_where=NUMBERED,
    )


def downgrade() -> None:
    op.drop_index("attr_index_num", table_name="attr_index")
    op.drop_index("attr_index_text", table_name="attr_index")
    op.drop_table("attr_index")
