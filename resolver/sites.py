"""Service sites: where the servers answering for a prefix are (HS_SITE values).

An HS_SITE value's data (format ``site``) is Handle.Net's JSON description: a list of servers,
each with an address and interfaces (protocol and port).  idis nodes talk to each other over
HTTP, so a site is usable here through its ``HTTP`` interfaces.  ``HS_SITE`` says who answers
for handles under a prefix; ``HS_SITE.PREFIX`` (or ``HS_SERV.PREFIX``) says who administers
the prefixes derived from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from resolver.values import HS_SITE, HandleValue

HS_SITE_PREFIX = "HS_SITE.PREFIX"
HS_SERV_PREFIX = "HS_SERV.PREFIX"
DERIVED_SITE_TYPES = (HS_SITE_PREFIX, HS_SERV_PREFIX)


@dataclass(frozen=True, slots=True)
class Site:
    """One service site: the base URLs of its servers, in the order to try them."""

    urls: tuple[str, ...]
    description: str = ""


def site_data(
    urls: Sequence[str],
    description: str = "",
    *,
    native_port: int | None = None,
    public_key: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The HS_SITE payload describing an idis site whose servers answer at ``urls``.

    With ``native_port`` each server also lists the native Handle protocol's TCP and UDP
    interfaces on its address (query only: administration is over HTTP), and with
    ``public_key`` (Handle.Net's JSON form, ``{"kty": "RSA", ...}``) the site's key, which
    clients use to check signed answers."""
    servers = []
    for number, url in enumerate(urls, start=1):
        parts = urlsplit(url)
        interfaces: list[dict[str, Any]] = []
        if native_port is not None:
            for protocol in ("TCP", "UDP"):
                interfaces.append(
                    {"query": True, "admin": False, "protocol": protocol, "port": native_port}
                )
        interfaces.append(
            {
                "query": True,
                "admin": True,
                "protocol": "HTTPS" if parts.scheme == "https" else "HTTP",
                "port": parts.port or (443 if parts.scheme == "https" else 80),
            }
        )
        servers.append(
            {
                "serverId": number,
                "address": parts.hostname or "",
                "publicKey": {"format": "key", "value": public_key},
                "interfaces": interfaces,
            }
        )
    return {
        "version": 1,
        "protocolVersion": "2.11",
        "serialNumber": 1,
        "primarySite": True,
        "multiPrimary": False,
        "attributes": [{"name": "desc", "value": description}] if description else [],
        "servers": servers,
    }


def parse_site(data: Any) -> Site | None:
    """The site a ``site`` payload describes, or None if it has no HTTP interface."""
    if not isinstance(data, dict):
        return None
    urls = []
    for server in data.get("servers") or ():
        if not isinstance(server, dict):
            continue
        address = str(server.get("address") or "")
        host = f"[{address}]" if ":" in address else address
        for interface in server.get("interfaces") or ():
            if not isinstance(interface, dict):
                continue
            protocol = str(interface.get("protocol", "")).upper()
            if protocol in ("HTTP", "HTTPS") and address and interface.get("query", True):
                urls.append(f"{protocol.lower()}://{host}:{int(interface.get('port', 80))}")
    description = ""
    for attribute in data.get("attributes") or ():
        if isinstance(attribute, dict) and attribute.get("name") == "desc":
            description = str(attribute.get("value", ""))
    return Site(tuple(urls), description) if urls else None


def sites_of(values: Sequence[HandleValue], *, derived: bool = False) -> list[Site]:
    """The usable sites among ``values``: HS_SITE, or with ``derived`` HS_SITE.PREFIX."""
    wanted = DERIVED_SITE_TYPES if derived else (HS_SITE,)
    sites = []
    for value in values:
        if value.type.upper() in wanted and value.data.format == "site":
            site = parse_site(value.data.value)
            if site is not None:
                sites.append(site)
    return sites
