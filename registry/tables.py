"""The registry's tables (SQLAlchemy Core metadata; Alembic migrations create them).

One row per handle keeps a resolution to one primary-key read and an import to one COPY row.
``key`` is the folded identifier; its byte-wise collation ("C" on PostgreSQL, SQLite's default)
lets the primary-key index serve prefix listings as a range scan (``key >= 'P/' AND key < 'P0'``,
'0' being the character after '/').  ``data`` holds the values in the compact stored form of
:mod:`resolver.codecs.stored`.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

KeyText = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")

handles = sa.Table(
    "handles",
    metadata,
    sa.Column("key", KeyText, primary_key=True),
    sa.Column("handle", sa.Text, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
)

prefixes = sa.Table(
    "prefixes",
    metadata,
    sa.Column("key", KeyText, primary_key=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("homed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
