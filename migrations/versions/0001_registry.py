"""The registry: one row per handle, and the prefixes homed on this node.

Revision ID: 0001
Revises:
Create Date: 2026-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Byte-wise key order lets the primary-key index serve prefix listings as a range scan;
# SQLite's default collation already is byte-wise.  Spelled out here rather than imported from
# registry.tables so that this revision keeps meaning what it meant when it was written.
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "handles",
        sa.Column("key", KeyText, primary_key=True),
        sa.Column("handle", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_table(
        "prefixes",
        sa.Column("key", KeyText, primary_key=True),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column(
            "homed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("prefixes")
    op.drop_table("handles")
