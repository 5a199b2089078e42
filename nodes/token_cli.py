"""``idis token``: scoped API tokens from the node's own machine (registry/tokens.py).

An operator with the node's settings (its database) issues, lists and revokes the tokens of an
identity of the registry, as that identity would through ``/api/tokens``::

    idis token issue 300:88.100/ADMIN --prefix 88.100 --rights ADD_HANDLE,READ_VALUE
                     [--expires-in SECONDS] [--label TEXT]
    idis token list 300:88.100/ADMIN
    idis token revoke 300:88.100/ADMIN ID

``issue`` prints the token (shown this once) and its id; the others print JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from nodes.settings import load_settings


async def _tokens_do(args: argparse.Namespace) -> Any:
    from nodes.http.tokens_api import render_token
    from registry.authentication import parse_identity
    from registry.stores.sql import SqlStore
    from registry.stores.tokens import SqlTokens
    from registry.tokens import Tokens, parse_rights
    from resolver.errors import HandleNotFound

    settings = load_settings()
    store = SqlStore(settings.database_url)
    tokens = Tokens(SqlTokens(settings.database_url), store.get)
    identity = parse_identity(args.identity)
    try:
        if args.action == "issue":
            mask = parse_rights([r.strip() for r in args.rights.split(",") if r.strip()])
            text, token = await tokens.issue(
                identity, prefix=args.prefix, mask=mask, ttl=args.expires_in, label=args.label
            )
            return {"token": text, **render_token(token)}
        if args.action == "list":
            return [render_token(t) for t in await tokens.list(identity)]
        if not await tokens.revoke(identity, args.id):
            raise HandleNotFound(f"no live token {args.id} of {identity}")
        return {"revoked": args.id}
    finally:
        await tokens.close()
        await store.close()


def cmd_token(args: argparse.Namespace) -> int:
    print(json.dumps(asyncio.run(_tokens_do(args)), indent=2))
    return 0


def add_token_commands(commands: Any) -> None:
    token = commands.add_parser("token", help="scoped API tokens of an identity")
    actions = token.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="issue a token (printed once)")
    issue.add_argument("identity", help="index:handle, e.g. 300:88.100/ADMIN")
    issue.add_argument("--prefix", default="", help="limit it to this prefix (default: all)")
    issue.add_argument("--rights", required=True, help="comma-separated: ADD_HANDLE,READ_VALUE")
    issue.add_argument("--expires-in", type=int, default=86400, help="seconds (default a day)")
    issue.add_argument("--label", default="", help="what it is for")
    listing = actions.add_parser("list", help="the identity's tokens")
    listing.add_argument("identity", help="index:handle whose tokens to list")
    revoke = actions.add_parser("revoke", help="revoke one token")
    revoke.add_argument("identity", help="index:handle that issued the token")
    revoke.add_argument("id", help="the token's id, as `idis token list` shows it")
    for sub in (issue, listing, revoke):
        sub.set_defaults(run=cmd_token)
