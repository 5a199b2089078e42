"""Enterprise prefix applications: an enterprise applies, the secondary node decides.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from registry.tables (see 0001).
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
# Only open applications (pending, approved) hold their prefix: a rejected one leaves it free
# to apply for again.  A partial unique index says so in the database itself, so two
# concurrent applications for one prefix cannot both be accepted.
OPEN = sa.text("status IN ('pending', 'approved')")


def upgrade() -> None:
    op.create_table(
        "prefix_applications",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("key", KeyText, nullable=False),
        sa.Column("parent", KeyText, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("hosting", sa.Text, nullable=False),
        sa.Column("site_url", sa.Text, nullable=True),
        sa.Column("secret_hash", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.CheckConstraint(
            "hosting IN ('hosted', 'self-hosted')", name="prefix_applications_hosting"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')", name="prefix_applications_status"
        ),
    )
    op.create_index(
        "prefix_applications_open_key",
        "prefix_applications",
        ["key"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    op.create_index(
        "prefix_applications_parent_status",
        "prefix_applications",
        ["parent", "status", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("prefix_applications_parent_status", table_name="prefix_applications")
    op.drop_index("prefix_applications_open_key", table_name="prefix_applications")
    op.drop_table("prefix_applications")
