"""Every request on a connection gets an answer, even when the application fails."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from nodes.http.resolution import ASGIApp, Scope, Send
from resolver import render

log = logging.getLogger(__name__)


class AnswerEveryRequest:
    """Keeps an application's failures from closing the connection under a keep-alive client.

    Starlette answers an unexpected exception with the 500 of the application's handler, then
    raises it again for the server to log; uvicorn then closes the connection, although that
    answer did not say ``connection: close``, so a request the client sent next (or had
    already pipelined) is never answered.  Here an exception after a complete answer is
    dropped (the application's handler logged it), one before any answer is logged and
    answered 500 in Handle terms, and one in the middle of an answer is left to the server,
    which can only close the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        progress = [False, False]  # response started, response complete

        async def tracked(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                progress[0] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                progress[1] = True
            await send(message)

        try:
            await self._app(scope, receive, tracked)
        except Exception:
            if progress[1]:
                return
            if progress[0]:
                raise
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            body = render.error(2, "internal error")
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})
