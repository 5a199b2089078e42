"""One change log for every role, in place of the top-level peers' multi-master journal.

The national tier is one PostgreSQL cluster (Patroni), so top-level sites no longer replicate
each other: the journal of each member's own writes (``txlog``), the last writer of each key
(``origins``) and the peers' cursors (``replication_cursors``) go.  Every write now appends its
key to ``change_log``; ``change_log_horizon`` says up to where it was pruned, and
``feed_cursors`` holds a mirror's position in the change feeds it follows.

The new log continues the old one's numbering and counts the old entries as pruned, so a
consumer still holding a cursor into the old journal is told it fell behind and re-synchronises
from a snapshot.  Downgrading recreates the old tables empty.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from registry.tables (see 0001).
KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    last = bind.execute(sa.text("SELECT max(seq) FROM txlog")).scalar_one() or 0
    op.drop_table("replication_cursors")
    op.drop_table("origins")
    op.drop_table("txlog")
    op.create_table(
        "change_log",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("key", KeyText, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("origin", sa.BigInteger, nullable=True),
        sqlite_autoincrement=True,
    )
    horizon = op.create_table(
        "change_log_horizon",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(horizon, [{"id": 1, "seq": int(last)}])
    if last:
        if bind.dialect.name == "postgresql":
            op.execute(
                sa.text(
                    "SELECT setval(pg_get_serial_sequence('change_log', 'seq'), :last)"
                ).bindparams(last=int(last))
            )
        else:
            op.execute(
                sa.text(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('change_log', :last)"
                ).bindparams(last=int(last))
            )
    op.create_table(
        "feed_cursors",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feed_cursors")
    op.drop_table("change_log_horizon")
    op.drop_table("change_log")
    # Exactly the tables 0002 made, empty.
    import_module("migrations.versions.0002_replication").upgrade()
