"""Replication between federation members: the journal of local writes, who wrote each key,
and how far each peer's journal has been applied.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from registry.tables (see 0001).
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
# A bigserial on PostgreSQL; on SQLite an INTEGER PRIMARY KEY AUTOINCREMENT, so that a seq is
# never reused.
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "txlog",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("key", KeyText, nullable=False),
        sa.Column("handle", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("stamp", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "origins",
        sa.Column("key", KeyText, primary_key=True),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("stamp", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "replication_cursors",
        sa.Column("peer", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replication_cursors")
    op.drop_table("origins")
    op.drop_table("txlog")
