"""Federating with the top level: a secondary node registers its sites for its prefix.

Registration is an ordinary authenticated Handle write: the node PUTs ``HS_SITE`` (who
answers for handles under the prefix) and ``HS_SITE.PREFIX`` (who administers prefixes derived
from it) into ``0.NA/PREFIX`` at a top-level node, as the prefix holder ``300:0.NA/PREFIX``.
The top level's replication then carries the record to every top-level node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from resolver.codecs.json_api import render_value
from resolver.errors import PeerRefused, UpstreamUnavailable
from resolver.identifiers import prefix_handle
from resolver.sites import HS_SITE_PREFIX, site_data
from resolver.values import HS_SITE, Data, HandleValue

SITE_INDEX = 1
DERIVED_SITE_INDEX = 2


def site_values(site_url: str, description: str, *, derived: bool = True) -> list[dict[str, Any]]:
    """The REST JSON of HS_SITE (and HS_SITE.PREFIX) values naming the site at ``site_url``."""
    data = Data("site", site_data([site_url], description))
    values = [HandleValue(SITE_INDEX, HS_SITE, data)]
    if derived:
        values.append(HandleValue(DERIVED_SITE_INDEX, HS_SITE_PREFIX, data))
    return [{k: v for k, v in render_value(value).items() if k != "timestamp"} for value in values]


def basic_auth(identity: str, secret: str) -> httpx.BasicAuth:
    """Handle's convention: the identity percent-encoded as the user name."""
    return httpx.BasicAuth(quote(identity, safe=""), secret)


async def put_values(
    base_urls: Sequence[str],
    handle: str,
    values: list[dict[str, Any]],
    identity: str,
    secret: str,
    timeout: float = 5.0,
) -> str:
    """PUT ``values`` (replacing those indexes only) into ``handle`` at the first node of
    ``base_urls`` that answers; returns that node's URL.  Raises the node's Handle error."""
    indexes = "&".join(f"index={v['index']}" for v in values)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for base in base_urls:
            url = f"{base.rstrip('/')}/api/handles/{quote(handle, safe='/')}?{indexes}"
            try:
                response = await client.put(
                    url, json={"values": values}, auth=basic_auth(identity, secret)
                )
            except httpx.HTTPError:
                continue
            if response.status_code >= 500:
                continue
            body = response.json()
            if body.get("responseCode") != 1:
                code = int(body.get("responseCode", 2))
                raise PeerRefused(code, f"{base}: {body.get('message', 'refused')}", handle=handle)
            return base
    raise UpstreamUnavailable("no top-level node answered", handle=handle)


async def register_sites(
    top_level: Sequence[str], prefix: str, site_url: str, identity: str, secret: str
) -> str:
    """Point ``0.NA/prefix`` at the top level to this node's site (see the module docstring)."""
    values = site_values(site_url, f"idis node for {prefix}")
    return await put_values(top_level, prefix_handle(prefix), values, identity, secret)
