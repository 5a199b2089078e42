"""Where API tokens are kept: the ``api_tokens`` table (SQLite or PostgreSQL), or a dict.

Both implement :class:`registry.tokens.TokenStore`.  Tokens are administrative traffic and
reads are remembered by :class:`registry.tokens.Tokens`, so the engine's pool is small.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from registry.stores.sql import as_utc, make_engine
from registry.tables import api_tokens as table
from registry.tokens import Token


def _row_token(row: Any) -> Token:
    return Token(
        id=row.id,
        digest=row.digest,
        identity=row.identity,
        prefix=row.prefix,
        rights=row.rights,
        label=row.label,
        created_at=as_utc(row.created_at) or row.created_at,
        expires_at=as_utc(row.expires_at) or row.expires_at,
        revoked_at=as_utc(row.revoked_at),
    )


class SqlTokens:
    def __init__(self, url: str, *, pool_size: int = 2, max_overflow: int = 4) -> None:
        self._engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)

    async def add(self, token: Token) -> None:
        row = {c.name: getattr(token, c.name) for c in table.columns}
        async with self._engine.begin() as conn:
            await conn.execute(table.insert().values(**row))

    async def by_digest(self, digest: str) -> Token | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(table.select().where(table.c.digest == digest))).first()
        return _row_token(row) if row is not None else None

    async def of_identity(self, identity: str) -> list[Token]:
        query = table.select().where(table.c.identity == identity).order_by(table.c.created_at)
        async with self._engine.connect() as conn:
            return [_row_token(row) for row in await conn.execute(query)]

    async def revoke(self, token_id: str, identity: str, when: datetime) -> bool:
        stmt = (
            sa.update(table)
            .where(
                table.c.id == token_id,
                table.c.identity == identity,
                table.c.revoked_at.is_(None),
            )
            .values(revoked_at=when)
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def close(self) -> None:
        await self._engine.dispose()


class MemoryTokens:
    """The in-memory twin (tests, and nodes without a database of their own)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}

    async def add(self, token: Token) -> None:
        self._tokens[token.id] = token

    async def by_digest(self, digest: str) -> Token | None:
        return next((t for t in self._tokens.values() if t.digest == digest), None)

    async def of_identity(self, identity: str) -> list[Token]:
        return [t for t in self._tokens.values() if t.identity == identity]

    async def revoke(self, token_id: str, identity: str, when: datetime) -> bool:
        token = self._tokens.get(token_id)
        if token is None or token.identity != identity or token.revoked_at is not None:
            return False
        self._tokens[token_id] = replace(token, revoked_at=when)
        return True

    async def close(self) -> None:
        return None
