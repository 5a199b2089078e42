"""Asking other idis nodes over their REST API (the adapter behind ``resolver.walk.PeerClient``).

aiohttp rather than httpx: a walk is a chain of upstream requests made one after the other, so
the client's own work per request adds straight to the latency of every cold resolution.  On
loopback httpx spent about 400 us of Python per request (its model objects, httpcore, h11's
pure-Python parser, anyio), aiohttp about 65 us (its C parser, one session object); the peer
itself needs 40 us for a cached answer.  See loadtests/README.md (``bench_recursive``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from resolver.codecs.json_api import parse_value
from resolver.errors import HandleError
from resolver.walk import PeerAnswer, PeerUnavailable


class HttpPeerClient:
    """Keep-alive HTTP connections to peers; any transport failure is :class:`PeerUnavailable`.

    ``timeout`` bounds each request as a whole: a peer slower than that counts as down, so the
    walk moves on to the next server instead of making the factory system wait.

    The session is opened on first use, inside the event loop that uses it (aiohttp binds a
    session to its loop); :meth:`close` releases it.
    """

    def __init__(self, timeout: float = 1.0, max_connections: int = 200) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session left behind in another (finished) loop cannot be closed from this one;
            # its connections went with that loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                timeout=self._timeout,
                headers={"accept": "application/json"},
                auto_decompress=False,
                raise_for_status=False,
            )
            self._loop = loop
        return self._session

    async def query(self, base_url: str, handle: str, *, fresh: bool) -> PeerAnswer:
        # Quoted here, once, and passed as already encoded: yarl need not parse and requote it.
        path = f"{base_url}/api/handles/{quote(handle, safe='/')}"
        url = URL(path + "?auth=true" if fresh else path, encoded=True)
        try:
            async with self._open().get(url) as response:
                status = response.status
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise PeerUnavailable(f"{base_url}: {error!r}") from None
        if status >= 500:
            raise PeerUnavailable(f"{base_url}: HTTP {status}")
        try:
            body = orjson.loads(content)
            code = int(body["responseCode"])
            values = tuple(
                parse_value(raw, 0, keep_timestamp=True) for raw in body.get("values") or ()
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, HandleError):
            raise PeerUnavailable(f"{base_url}: unreadable answer") from None
        referral = body.get("referral")
        if not isinstance(referral, str):
            referral = ""
        return PeerAnswer(code, str(body.get("handle", handle)), values, referral)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()
