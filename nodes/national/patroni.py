"""Asking Patroni about its cluster and moving its leader, through Patroni's REST API.

idis elects nothing: Patroni (over etcd) decides which member leads.  This module only reads
what Patroni says (``GET /cluster``) and asks it for a planned switchover (``POST
/switchover``), for ``idis national status|switchover`` and the national tier's harness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 5.0
SWITCHOVER_TIMEOUT = 60.0


class PatroniError(RuntimeError):
    """Patroni could not be asked, or refused; the message says which and why."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    name: str
    role: str
    """``leader``, ``sync_standby`` or ``replica`` (as Patroni names them)."""
    state: str
    """``running``, ``streaming``, ``starting``, ``stopped``..."""
    api_url: str
    lag: int | None
    """Bytes of WAL behind the leader (None for the leader, or when unknown)."""


def cluster(api_urls: Sequence[str], timeout: float = TIMEOUT) -> list[MemberInfo]:
    """The members as the first Patroni REST API in ``api_urls`` that answers sees them."""
    last: Exception | None = None
    for url in api_urls:
        try:
            answer = httpx.get(f"{url.rstrip('/')}/cluster", timeout=timeout)
            answer.raise_for_status()
            return members_of(answer.json())
        except (httpx.HTTPError, ValueError) as error:
            last = error
    raise PatroniError(f"no Patroni REST API answered ({', '.join(api_urls)}): {last}")


def members_of(body: Any) -> list[MemberInfo]:
    """The members in the JSON of Patroni's ``GET /cluster``; ValueError if it is not that."""
    try:
        return [_member(item) for item in body.get("members", [])]
    except (AttributeError, KeyError, TypeError) as error:
        raise ValueError(f"not Patroni's cluster JSON: {error!r}") from None


def _member(item: dict[str, Any]) -> MemberInfo:
    lag = item.get("lag")
    return MemberInfo(
        name=str(item["name"]),
        role=str(item.get("role", "")),
        state=str(item.get("state", "")),
        api_url=str(item.get("api_url", "")).removesuffix("/patroni"),
        lag=lag if isinstance(lag, int) else None,
    )


def leader(members: Sequence[MemberInfo]) -> MemberInfo | None:
    """The running leader, if there is one."""
    return next((m for m in members if m.role == "leader" and m.state == "running"), None)


def switchover(
    api_urls: Sequence[str], candidate: str | None = None, timeout: float = SWITCHOVER_TIMEOUT
) -> tuple[str, str]:
    """Move the leadership to ``candidate`` (default: a synchronous standby, which loses
    nothing); ``(old leader, new leader)`` once Patroni reports it done.

    Raises :class:`PatroniError` if there is no leader, no candidate, or Patroni refuses.
    """
    members = cluster(api_urls)
    current = leader(members)
    if current is None:
        raise PatroniError("the cluster has no running leader to switch over from")
    if candidate is None:
        synchronous = [m for m in members if m.role == "sync_standby" and m.state == "streaming"]
        if not synchronous:
            raise PatroniError("no synchronous standby is streaming: name a candidate")
        candidate = synchronous[0].name
    try:
        answer = httpx.post(
            f"{current.api_url}/switchover",
            json={"leader": current.name, "candidate": candidate},
            timeout=timeout,
        )
    except httpx.HTTPError as error:
        raise PatroniError(f"asking {current.api_url} to switch over failed: {error}") from None
    if answer.status_code != 200:
        raise PatroniError(f"Patroni refused the switchover ({answer.status_code}): {answer.text}")
    return current.name, candidate


def patch_config(api_urls: Sequence[str], changes: dict[str, Any]) -> None:
    """Change the cluster's dynamic configuration (``PATCH /config``), e.g. synchronous mode."""
    last: Exception | None = None
    for url in api_urls:
        try:
            answer = httpx.patch(f"{url.rstrip('/')}/config", json=changes, timeout=TIMEOUT)
            answer.raise_for_status()
            return
        except httpx.HTTPError as error:
            last = error
    raise PatroniError(f"no Patroni REST API took the configuration change: {last}")
