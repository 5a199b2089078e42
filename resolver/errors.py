"""The error tree of the core, one class per Handle response code.

Each error carries its Handle ``responseCode``; the HTTP edge maps codes to statuses in one
table (``nodes.http.errors``), so nothing below the edge knows about HTTP.
"""

from __future__ import annotations


class HandleError(Exception):
    """A failure the protocol can name. ``code`` is the Handle response code."""

    code: int = 2

    def __init__(self, message: str, *, handle: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.handle = handle


class ServerError(HandleError):
    code = 2


class ServerBusy(HandleError):
    """The request may succeed if retried later; ``retry_after`` suggests when (seconds)."""

    code = 3
    retry_after = 1


class StorageUnavailable(ServerBusy):
    """The registry's database cannot be reached, or cannot take writes right now (a failover
    under way).  A write that fails this way may still have committed: retry it idempotently."""

    retry_after = 5


class Throttled(HandleError):
    """Too many failed attempts (or anonymous requests) from a client: it is to wait
    ``retry_after`` seconds.  Handle names no such code; "server too busy" is the nearest, and
    the HTTP edge answers 429 with ``Retry-After``."""

    code = 3

    def __init__(self, message: str, *, retry_after: int, handle: str | None = None) -> None:
        super().__init__(message, handle=handle)
        self.retry_after = retry_after


class QuotaExceeded(HandleError):
    """A quota of an identity or a prefix is spent (IDIS codes): 603 the daily resolutions,
    604 the registrations, 605 the prefixes.  HTTP edges answer 429 with the code in the body;
    unlike :class:`Throttled` there is no retrying soon (a daily quota resets at midnight UTC,
    a count when something is deleted)."""

    DAILY_RESOLUTIONS = 603
    REGISTRATIONS = 604
    PREFIXES = 605

    def __init__(self, code: int, message: str, *, handle: str | None = None) -> None:
        super().__init__(message, handle=handle)
        self.code = code


class ProtocolError(HandleError):
    """The request itself is malformed (bad JSON, bad encoding, oversize body)."""

    code = 4


class OperationNotSupported(HandleError):
    code = 5


class RecursionTooDeep(HandleError):
    """Aliases or referrals went deeper than allowed (most often: they loop)."""

    code = 6


class HandleNotFound(HandleError):
    code = 100


class HandleAlreadyExists(HandleError):
    code = 101


class InvalidHandle(HandleError):
    code = 102


class ValuesNotFound(HandleError):
    code = 200


class ValueAlreadyExists(HandleError):
    code = 201


class InvalidValue(HandleError):
    code = 202


class PrefixNotHomed(HandleError):
    """The prefix does not live on this node (Handle's "server not responsible")."""

    code = 301


class InvalidAdmin(HandleError):
    code = 400


class InsufficientPermissions(HandleError):
    code = 401


class AuthenticationNeeded(HandleError):
    code = 402


class AuthenticationFailed(HandleError):
    code = 403


class InvalidCredential(HandleError):
    code = 404


class SessionTimeout(HandleError):
    """No such session here (never set up, expired or ended): the client sets up another."""

    code = 500


class SessionFailed(HandleError):
    code = 501


class InvalidSessionKey(HandleError):
    """A request in a session whose MAC does not verify with the session's key."""

    code = 502


class SessionMessageRejected(HandleError):
    """A session counter seen before: a replayed message."""

    code = 505


class UpstreamUnavailable(ServerBusy):
    """No server of any site that could answer was reachable (a recursive node's failure)."""


class PeerRefused(HandleError):
    """Another node answered a request with an error; ``code`` is the code it gave."""

    def __init__(self, code: int, message: str, *, handle: str | None = None) -> None:
        super().__init__(message, handle=handle)
        self.code = code
