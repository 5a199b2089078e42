"""Asking other idis nodes over their REST API (the adapter behind ``resolver.walk.PeerClient``)."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import orjson

from resolver.codecs.json_api import parse_value
from resolver.errors import HandleError
from resolver.walk import PeerAnswer, PeerUnavailable


class HttpPeerClient:
    """Keep-alive HTTP connections to peers; any transport failure is :class:`PeerUnavailable`.

    ``timeout`` bounds each request: a peer slower than that counts as down, so the walk moves
    on to the next server instead of making the factory system wait.
    """

    def __init__(self, timeout: float = 1.0, max_connections: int = 200) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"accept": "application/json"},
        )

    async def query(self, base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        url = f"{base_url}/api/handles/{quote(handle, safe='/')}"
        try:
            response = await self._client.get(url, params={"auth": "true"} if fresh else None)
        except httpx.HTTPError as error:
            raise PeerUnavailable(f"{base_url}: {error!r}") from None
        if response.status_code >= 500:
            raise PeerUnavailable(f"{base_url}: HTTP {response.status_code}")
        try:
            body = orjson.loads(response.content)
            code = int(body["responseCode"])
            values = tuple(
                parse_value(raw, 0, keep_timestamp=True) for raw in body.get("values") or ()
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, HandleError):
            raise PeerUnavailable(f"{base_url}: unreadable answer") from None
        return PeerAnswer(code, str(body.get("handle", handle)), values)

    async def close(self) -> None:
        await self._client.aclose()
