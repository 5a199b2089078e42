"""Federating with the top level: a secondary node registers its sites for its prefix.

Registration is an ordinary authenticated Handle write: the node PUTs ``HS_SITE`` (who
answers for handles under the prefix) and ``HS_SITE.PREFIX`` (who administers prefixes derived
from it) into ``0.NA/PREFIX`` at a top-level node, as the prefix holder ``300:0.NA/PREFIX``.
The national tier is one registry, so every top-level site has the record at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from registry.prefixes import site_values as prefix_site_values
from resolver.codecs.json_api import render_value
from resolver.errors import HandleNotFound, PeerRefused, ServerError, UpstreamUnavailable
from resolver.identifiers import prefix_handle
from resolver.values import HandleValue, Ref


def rest_values(values: Sequence[HandleValue]) -> list[dict[str, Any]]:
    """The REST JSON of values to write (the server sets timestamps)."""
    return [{k: v for k, v in render_value(value).items() if k != "timestamp"} for value in values]


def site_values(site_url: str, description: str, *, derived: bool = True) -> list[dict[str, Any]]:
    """The REST JSON of HS_SITE (and HS_SITE.PREFIX) values naming the site at ``site_url``."""
    return rest_values(prefix_site_values(site_url, description, derived=derived))


def basic_auth(identity: str, secret: str) -> httpx.BasicAuth:
    """Handle's convention: the identity percent-encoded as the user name."""
    return httpx.BasicAuth(quote(identity, safe=""), secret)


async def _send(
    base_urls: Sequence[str],
    method: str,
    handle: str,
    query: str,
    identity: str,
    secret: str,
    timeout: float,
    body: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Send to ``/api/handles/HANDLE?QUERY`` at the first node of ``base_urls`` that answers
    (transport failures and server errors move on to the next); that node and its JSON."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        for base in base_urls:
            url = f"{base.rstrip('/')}/api/handles/{quote(handle, safe='/')}?{query}"
            try:
                response = await client.request(
                    method, url, json=body, auth=basic_auth(identity, secret)
                )
            except httpx.HTTPError:
                continue
            if response.status_code >= 500:
                continue
            try:
                answer = response.json()
            except ValueError:
                continue
            return base, answer if isinstance(answer, dict) else {}
    raise UpstreamUnavailable("no top-level node answered", handle=handle)


def _refused(base: str, answer: dict[str, Any], handle: str) -> PeerRefused:
    code = int(answer.get("responseCode", 2))
    return PeerRefused(code, f"{base}: {answer.get('message', 'refused')}", handle=handle)


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
    body = {"values": values}
    base, answer = await _send(base_urls, "PUT", handle, indexes, identity, secret, timeout, body)
    if answer.get("responseCode") != 1:
        raise _refused(base, answer, handle)
    return base


async def delete_handle(
    base_urls: Sequence[str], handle: str, identity: str, secret: str, timeout: float = 5.0
) -> str:
    """DELETE ``handle`` at the first node of ``base_urls`` that answers; its URL.  A handle
    that does not exist is no error; any other refusal raises the node's Handle error."""
    base, answer = await _send(base_urls, "DELETE", handle, "", identity, secret, timeout)
    if answer.get("responseCode") not in (1, HandleNotFound.code):
        raise _refused(base, answer, handle)
    return base


async def register_sites(
    top_level: Sequence[str],
    prefix: str,
    site_url: str,
    identity: str,
    secret: str,
    *,
    native_port: int | None = None,
    public_key: dict[str, Any] | None = None,
) -> str:
    """Point ``0.NA/prefix`` at the top level to this node's site (see the module docstring),
    naming its native interfaces and key when given."""
    values = rest_values(
        prefix_site_values(
            site_url,
            f"idis node for {prefix}",
            derived=True,
            native_port=native_port,
            public_key=public_key,
        )
    )
    return await put_values(top_level, prefix_handle(prefix), values, identity, secret)


class TopLevelClient:
    """Prefix records at the top level, written as a prefix holder (the
    :class:`registry.enterprise.TopLevel` port of the enterprise prefix workflow).

    The holder's secret is read from ``holder_secret_file`` on every use, so that replacing the
    file takes effect without a restart.
    """

    def __init__(
        self, top_level: Sequence[str], holder_secret_file: Path | None, timeout: float = 5.0
    ) -> None:
        self._urls = list(top_level)
        self._secret_file = holder_secret_file
        self._timeout = timeout

    def _secret(self) -> str:
        if self._secret_file is None:
            raise ServerError(
                "IDIS_FEDERATION__HOLDER_SECRET_FILE is not set: this node cannot write to the"
                " top level as the holder of its prefix"
            )
        try:
            secret = self._secret_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ServerError(f"cannot read the holder secret file: {error}") from None
        if not secret:
            raise ServerError(f"the holder secret file {self._secret_file} is empty")
        return secret

    def check(self) -> None:
        if not self._urls:
            raise ServerError("IDIS_FEDERATION__TOP_LEVEL is not set: no top level to write to")
        self._secret()

    async def put(self, handle: str, values: Sequence[HandleValue], identity: Ref) -> None:
        await put_values(
            self._urls, handle, rest_values(values), str(identity), self._secret(), self._timeout
        )

    async def delete(self, handle: str, identity: Ref) -> None:
        await delete_handle(self._urls, handle, str(identity), self._secret(), self._timeout)
