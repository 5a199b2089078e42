"""Reading JSON request bodies and writing JSON responses, for the framework routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from resolver.errors import InvalidValue, ProtocolError


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """``body`` as JSON (orjson: several times faster than the framework's encoder)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, refusing more than ``limit`` bytes (code 4) and an
    empty body (code 202) before parsing anything."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    if not size:
        raise InvalidValue("request body is empty")
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as error:
        raise ProtocolError(f"request body is not valid UTF-8 JSON: {error}") from None
