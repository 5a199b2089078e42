"""Unique values of data templates: which handle holds each one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from registry.tables (see 0001).
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    # The primary key is the rule itself: two handles cannot hold one unique value of an item,
    # and a concurrent writer of the same value waits for the first transaction, then fails.
    op.create_table(
        "template_unique",
        sa.Column("template", KeyText, primary_key=True),
        sa.Column("item", sa.Integer, primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
        sa.Column("key", KeyText, nullable=False),
    )
    # Each write of a templated handle replaces the claims of its key.
    op.create_index("ix_template_unique_key", "template_unique", ["key"])


def downgrade() -> None:
    op.drop_index("ix_template_unique_key", table_name="template_unique")
    op.drop_table("template_unique")
