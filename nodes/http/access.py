"""Who may read a node's operational routes (``/api/stats``, ``/api/replication/status``).

They tell how busy a node is and how far its replication lags, which is the operator's
business: they need either the federation's credentials (Basic ``federation:<secret>``, what
peers and monitoring that holds the secret send) or an administrator of a prefix homed on this
node (an identity with any right over its ``0.NA/PREFIX`` record).  A recursive node homes no
prefix, so only its federation secret opens them there.
"""

from __future__ import annotations

from fastapi import Request

from nodes.bootstrap import Node
from nodes.http.params import client_address
from nodes.http.replication_api import authenticate_peer, is_federation_user
from registry.authorization import rights
from resolver.errors import AuthenticationNeeded, InsufficientPermissions
from resolver.identifiers import fold, prefix_handle
from resolver.values import Ref


async def require_identity(
    node: Node, request: Request, missing: str = "this operation needs authentication"
) -> Ref:
    """The request's authenticated identity (Basic or Bearer); 401 with ``missing`` if none."""
    identity: Ref | None = await node.authenticator.identify(
        request.headers.get("authorization"), client_address(request.scope)
    )
    if identity is None:
        raise AuthenticationNeeded(missing)
    return identity


async def require_operator(node: Node, request: Request) -> None:
    """Return if the request carries an operator's credentials; raise 401/403 otherwise."""
    header = request.headers.get("authorization")
    source = client_address(request.scope)
    if not header:
        raise AuthenticationNeeded("this route needs an administrator or the federation secret")
    if is_federation_user(header):
        await authenticate_peer(header, node.settings.federation.secret, node.throttle, source)
        return
    identity = await node.authenticator.identify(header, source)
    if identity is not None:
        for prefix in await node.registrar.homed_prefixes():
            record = await node.fetch(fold(prefix_handle(prefix)))
            if await rights(identity, record, node.fetch):
                return
    raise InsufficientPermissions(f"{identity} administers no prefix homed on this node")
