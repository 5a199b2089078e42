"""The one table from Handle response codes to HTTP statuses (DESIGN.md section 2)."""

from __future__ import annotations

from resolver.errors import AuthenticationNeeded, HandleError, Throttled

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
    603: 429,  # quotas (QuotaExceeded): too many requests, the code in the body says which
    604: 429,
    605: 429,
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


def error_status(error: HandleError, *, resolving: bool = False) -> tuple[int, dict[str, str]]:
    """The HTTP status and extra headers of an error answer: a throttled client gets 429 and
    when to come back, a missing authentication the Basic challenge, every code 3 its
    ``Retry-After``."""
    if isinstance(error, Throttled):
        return 429, {"retry-after": str(error.retry_after)}
    headers = {}
    if error.code == AuthenticationNeeded.code:
        headers["www-authenticate"] = 'Basic realm="idis"'
    wait = retry_after(error)
    if wait is not None:
        headers["retry-after"] = str(wait)
    return http_status(error.code, resolving=resolving), headers
