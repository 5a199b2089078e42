"""The one table from Handle response codes to HTTP statuses (DESIGN.md section 2)."""

from __future__ import annotations

_STATUS = {
    1: 200,
    2: 500,
    3: 503,
    4: 400,
    5: 400,
    6: 400,
    100: 404,
    101: 409,
    102: 400,
    200: 400,
    201: 409,
    202: 400,
    301: 400,
    400: 403,
    401: 403,
    402: 401,
    403: 403,
    404: 403,
    405: 403,
    406: 403,
}


def http_status(code: int, *, resolving: bool = False) -> int:
    """The HTTP status for a response code. Values-not-found is a 200 on a resolution."""
    if code == 200 and resolving:
        return 200
    return _STATUS.get(code, 500)


def retry_after(error: BaseException) -> int | None:
    """Seconds a client should wait before retrying, for a ``Retry-After`` header: set on
    every code 3 (busy, the database or every upstream unavailable), None otherwise."""
    if getattr(error, "code", None) != 3:
        return None
    return int(getattr(error, "retry_after", 1))
