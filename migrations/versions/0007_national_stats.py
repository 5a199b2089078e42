"""National statistics: usage counted per prefix and day, and the figures reported upward.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from registry.tables (see 0001).
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("prefix", KeyText, primary_key=True),
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("registered", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("resolved", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "usage_baseline",
        sa.Column("prefix", KeyText, primary_key=True),
        sa.Column("adjustment", sa.BigInteger, nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "national_stats",
        sa.Column("prefix", KeyText, primary_key=True),
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("registered", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("resolved", sa.BigInteger, nullable=False),
        sa.Column("identifiers", sa.BigInteger, nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("national_stats")
    op.drop_table("usage_baseline")
    op.drop_table("usage_daily")
