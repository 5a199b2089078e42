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

# --- the change log (see registry/changelog.py) ---------------------------------------------

# BIGINT on PostgreSQL (a bigserial); on SQLite the column must be spelled INTEGER to be the
# rowid, and AUTOINCREMENT (``sqlite_autoincrement``) keeps a seq from ever being reused after
# the newest entry is pruned, which readers holding that seq as their cursor rely on.
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("key", KeyText, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # The writing host (its generation board), which invalidated its own caches already.
    sa.Column("origin", sa.BigInteger, nullable=True),
    sqlite_autoincrement=True,
)
"""The key of every committed write, in commit order (seq order is commit order)."""

change_log_horizon = sa.Table(
    "change_log_horizon",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
)
"""One row (id 1): every change with seq <= ``seq`` has been pruned from ``change_log``."""

feed_cursors = sa.Table(
    "feed_cursors",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)
"""A mirror's position in each change feed it follows (nodes/mirror.py)."""

# --- unique values of data templates (see registry/templates.py) ------------------------------

template_unique = sa.Table(
    "template_unique",
    metadata,
    sa.Column("template", KeyText, primary_key=True),
    sa.Column("item", sa.Integer, primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("key", KeyText, nullable=False, index=True),
)
"""Each unique template value taken, by the handle (folded ``key``) holding it; written in the
transaction of that handle's write, so that the primary key decides concurrent writers."""

# --- enterprise prefix applications (see registry/enterprise.py) ----------------------------

OPEN_APPLICATION = sa.text("status IN ('pending', 'approved')")
"""The predicate of the partial index ``prefix_applications_open_key``, as literal SQL: an
``ON CONFLICT`` naming that index must repeat it without bound parameters, or PostgreSQL's
generic plan of the prepared statement (from its sixth run) no longer matches the index."""

prefix_applications = sa.Table(
    "prefix_applications",
    metadata,
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
    sa.CheckConstraint("hosting IN ('hosted', 'self-hosted')", name="prefix_applications_hosting"),
    sa.CheckConstraint(
        "status IN ('pending', 'approved', 'rejected')", name="prefix_applications_status"
    ),
    # An open application (pending or approved) holds its prefix; a rejected one frees it.
    sa.Index(
        "prefix_applications_open_key",
        "key",
        unique=True,
        sqlite_where=OPEN_APPLICATION,
        postgresql_where=OPEN_APPLICATION,
    ),
    sa.Index("prefix_applications_parent_status", "parent", "status", "created_at"),
)
"""Enterprises applying for prefixes derived from one homed here, and the decisions taken.

``key`` and ``parent`` are folded (see :func:`resolver.identifiers.fold`); ``secret_hash`` is
the applicant's PREFIX/ADMIN secret as :func:`registry.secrets.seal_secret` stores it, never
the secret itself."""

# --- API tokens and quota counters (see registry/tokens.py, registry/quotas.py) -------------

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False, unique=True),
    sa.Column("identity", KeyText, nullable=False, index=True),
    sa.Column("prefix", KeyText, nullable=False),
    sa.Column("rights", sa.Integer, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)
"""Scoped API tokens: the SHA-256 ``digest`` of each, never the token itself."""

quota_counters = sa.Table(
    "quota_counters",
    metadata,
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("period", sa.Text, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
"""Counts quotas are measured against: per subject (``registrations:prefix:P``...), per
period (a UTC day for daily counts, ``""`` for standing counts)."""

# --- national statistics (see registry/usage.py, nodes/stats/) -------------------------------

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("prefix", KeyText, primary_key=True),
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("registered", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("resolved", sa.BigInteger, nullable=False, server_default="0"),
)
"""What this node's workers counted per homed prefix (folded) and UTC day (``YYYY-MM-DD``),
added to by each worker's flush."""

usage_baseline = sa.Table(
    "usage_baseline",
    metadata,
    sa.Column("prefix", KeyText, primary_key=True),
    sa.Column("adjustment", sa.BigInteger, nullable=False),
    sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
)
"""Per prefix, what its identifier total is beyond the sum of ``registered - deleted`` in
``usage_daily``: set by counting the prefix's handles once (``idis stats recount``)."""

national_stats = sa.Table(
    "national_stats",
    metadata,
    sa.Column("prefix", KeyText, primary_key=True),
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("node", sa.Text, nullable=False),
    sa.Column("registered", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("resolved", sa.BigInteger, nullable=False),
    sa.Column("identifiers", sa.BigInteger, nullable=False),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
)
"""At the top level: the absolute figures reported per prefix and UTC day by the node that
serves it (the last report wins, so a repeated report never counts twice)."""
# --- the search index (see resolver/search.py, registry/search.py) ---------------------------

attr_index = sa.Table(
    "attr_index",
    metadata,
    sa.Column("key", KeyText, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("type", KeyText, nullable=False),
    sa.Column("v_text", KeyText, nullable=False),
    sa.Column("v_num", sa.Float(precision=53), nullable=True),
    sa.Column("public", sa.Boolean, nullable=False),
    # Exact and prefix matches are ranges of (type, v_text) then key: the "C" collation makes
    # a text prefix a byte range; numbers, dates and date-times are ranges of (type, v_num).
    sa.Index("attr_index_text", "type", "v_text", "key", "idx"),
    sa.Index(
        "attr_index_num",
        "type",
        "v_num",
        "key",
        "idx",
        postgresql_where=sa.text("v_num IS NOT NULL"),
        sqlite_where=sa.text("v_num IS NOT NULL"),
    ),
)
"""One row per value at index 2000 or above of a handle (folded ``key``, value index ``idx``):
its type upper-cased, its text, its sortable number if its template item is a number, date or
date-time, and whether it is publicly readable.  Written in the transaction of the handle's
write; the primary key lets a rewrite replace a handle's rows by key."""
