"""Allocating enterprise prefixes: an enterprise applies, this node approves, the top level
records it, the prefix is homed.

A secondary node homing ``88.100`` allocates the prefixes derived directly from it
(``88.100.1``).  An enterprise applies, anonymously (it has no identity yet), choosing:

- **hosted**: its identifiers live on this node.  On approval ``88.100.1`` is homed here and
  ``88.100.1/ADMIN`` is created with the secret the enterprise sent (stored only hashed), or
  with a generated one that the approval returns once;
- **self-hosted**: its identifiers live on the enterprise's own node, whose base URL it gives.
  On approval nothing is homed here; the enterprise homes the prefix on its node
  (``idis prefix init 88.100.7``), and this node answers service referrals (302) to it.

Either way approval writes ``0.NA/PREFIX`` here, as :func:`registry.prefixes.init_prefix` does
(HS_ADMIN to its admin group, which names ``300:PREFIX/ADMIN``) plus an HS_SITE naming the site
that serves the prefix, and has the top level record the same HS_SITE in its ``0.NA/PREFIX``,
written as the holder of the prefix the top level delegated to this node (``300:0.NA/88.100``,
authenticated with ``IDIS_FEDERATION__HOLDER_SECRET_FILE``), so that recursive resolvers find
the serving site from the top level directly.

Approval runs as steps that are each idempotent, in an order that keeps a failure harmless: the
local prefix record, the top-level record, homing, the decision, the administrator.  A failure
before the decision leaves the application pending, and approving it again finishes the job;
rejecting it instead withdraws what the failed attempt wrote.  The decision is a
compare-and-set from ``pending``, and the administrator record is created only if absent, so
concurrent approvals agree and a generated secret is shown by exactly one of them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from registry.authorization import DEFAULT_ADMIN_RIGHTS, Fetch, Right, rights
from registry.invalidation import Invalidator
from registry.prefixes import (
    SITE_INDEX,
    admin_identity,
    admin_record,
    prefix_record,
    site_values,
)
from registry.quotas import Quotas
from registry.secrets import generate_secret, seal_secret, weakness
from registry.service import MAX_ATTEMPTS
from resolver.errors import (
    HandleAlreadyExists,
    HandleNotFound,
    InsufficientPermissions,
    InvalidHandle,
    InvalidValue,
    PrefixNotHomed,
    QuotaExceeded,
    ServerBusy,
    Throttled,
)
from resolver.homes import HOMES_KEY
from resolver.identifiers import Handle, fold, parent_prefixes, prefix_handle, validate_prefix
from resolver.ports import RecordStore
from resolver.values import (
    ADMIN_INDEX,
    HS_ADMIN,
    HS_SITE,
    SECRET_KEY_INDEX,
    AdminRef,
    Data,
    HandleValue,
    Record,
    Ref,
)

Hosting = Literal["hosted", "self-hosted"]
Status = Literal["pending", "approved", "rejected"]
HOSTINGS: tuple[Hosting, ...] = ("hosted", "self-hosted")
STATUSES: tuple[Status, ...] = ("pending", "approved", "rejected")
OPEN_STATUSES: tuple[Status, ...] = ("pending", "approved")
"""Statuses in which an application holds its prefix (no second application may be made)."""

MAX_TEXT = 200
MAX_REASON = 2000
MAX_SECRET = 1024
MAX_LIST = 10_000
PENDING_RETRY_AFTER = 3600
"""Seconds an applicant refused for a full queue is told to wait: decisions take a while."""


@dataclass(frozen=True, slots=True)
class Application:
    """One enterprise's application for one prefix, and the decision taken on it."""

    id: str
    prefix: str
    name: str
    contact: str
    hosting: Hosting
    site_url: str | None
    """The enterprise node's base URL (self-hosted only)."""
    secret_hash: str | None
    """The applicant's PREFIX/ADMIN secret, hashed (hosted only, optional)."""
    status: Status
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        return fold(self.prefix)

    @property
    def parent(self) -> str:
        """The prefix this one derives from, which is homed on this node."""
        return self.prefix.rpartition(".")[0]

    @property
    def parent_key(self) -> str:
        return fold(self.parent)


@dataclass(frozen=True, slots=True)
class Approval:
    application: Application
    admin: Ref | None
    """The prefix administrator created here (hosted), None for a self-hosted prefix."""
    secret: str | None
    """The administrator's generated secret, given only by the call that created it."""


class ApplicationStore(Protocol):
    """Applications by id (see :mod:`registry.stores.applications`)."""

    async def add(self, application: Application) -> bool:
        """Store a new application; False if an open one holds its prefix already."""

    async def get(self, application_id: str) -> Application | None: ...

    async def holder(self, key: str) -> Application | None:
        """The open application holding the prefix with this folded key, if any."""

    async def parents(self) -> list[str]:
        """The parents (folded) of every prefix applied for, each once."""

    async def list(
        self, parents: Collection[str], status: Status | None, limit: int
    ) -> list[Application]:
        """Oldest first, those for prefixes derived from ``parents`` (folded), by status."""

    async def decide(
        self,
        application_id: str,
        status: Status,
        decided_at: datetime,
        decided_by: str,
        reason: str | None,
    ) -> bool:
        """Move a pending application to ``status``; False if it was not pending."""

    async def close(self) -> None: ...


class TopLevel(Protocol):
    """Writing prefix records at the top level (see :class:`nodes.federation.TopLevelClient`)."""

    def check(self) -> None:
        """Raise a :class:`resolver.errors.HandleError` if writes cannot even be attempted."""

    async def put(self, handle: str, values: Sequence[HandleValue], identity: Ref) -> None:
        """Write ``values`` (those indexes only) into ``handle`` as ``identity``."""

    async def delete(self, handle: str, identity: Ref) -> None:
        """Delete ``handle`` as ``identity``; a handle that does not exist is no error."""


def holder_identity(prefix: str) -> Ref:
    """How a node authenticates at the top level as the holder of ``prefix`` (the identity
    :func:`registry.prefixes.allocate_prefix` creates there)."""
    return Ref(prefix_handle(prefix), SECRET_KEY_INDEX)


def top_level_values(holder: Ref, site: HandleValue) -> list[HandleValue]:
    """What approval writes into ``0.NA/PREFIX`` at the top level: ``site``, and an HS_ADMIN
    by which ``holder`` administers the records of the prefixes it allocated."""
    admin = AdminRef(holder.handle, holder.index, DEFAULT_ADMIN_RIGHTS)
    return [HandleValue(ADMIN_INDEX, HS_ADMIN, Data("admin", admin)), site]


def _text(raw: object, what: str, *, required: bool, limit: int = MAX_TEXT) -> str:
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise InvalidValue(f"{what} must be a string")
    text = raw.strip()
    if required and not text:
        raise InvalidValue(f"{what} is required")
    if len(text) > limit or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidValue(f"{what} must be at most {limit} printable characters")
    return text


def site_url_of(raw: object) -> str:
    """An enterprise node's base URL: http(s), a host, perhaps a port, and no path.

    An HS_SITE names servers by address and port only, so a path could not be honoured.
    """
    text = _text(raw, "siteUrl", required=True, limit=1000)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InvalidValue(f"siteUrl {text!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"siteUrl {text!r} is not an http:// or https:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InvalidValue(f"siteUrl {text!r} must be a base URL: scheme, host and port only")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class EnterprisePrefixes:
    """The workflow (see the module docstring).

    ``store`` and ``invalidator`` are the node's registry, ``fetch`` reads records for
    authorization through its caches, ``site_url`` is this node's base URL (what a hosted
    prefix's HS_SITE names).  ``max_pending`` caps the applications awaiting a decision per
    parent prefix.
    """

    def __init__(
        self,
        applications: ApplicationStore,
        store: RecordStore,
        invalidator: Invalidator,
        fetch: Fetch,
        top_level: TopLevel,
        site_url: str,
        clock: Callable[[], float] = time.time,
        max_pending: int | None = None,
        native_port: int | None = None,
        public_key: dict[str, Any] | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._applications = applications
        self._quotas = quotas
        """Prefix quotas (605): an approval creating ``0.NA/PREFIX`` counts as the creation of
        a prefix by the approver, under the parent, as a write of it through REST does."""
        # This node's native interfaces and key, named in the HS_SITE of the prefixes it hosts
        # so that native clients find it (a self-hosted enterprise's own are not known here).
        self._native_port = native_port
        self._public_key = public_key
        self._max_pending = max_pending
        self._store = store
        self._invalidator = invalidator
        self._fetch = fetch
        self._top_level = top_level
        self._site_url = site_url
        self._clock = clock

    async def close(self) -> None:
        await self._applications.close()

    # --- applying ------------------------------------------------------------------------

    async def apply(
        self,
        prefix: object,
        name: object,
        contact: object = None,
        hosting: object = "hosted",
        site_url: object = None,
        secret: object = None,
    ) -> Application:
        """Record a pending application; anyone may apply.

        Raises 102 for a malformed prefix, 301 unless it derives directly from a prefix homed
        here, 101 if it is allocated already or another open application holds it, and 202 for
        anything else wrong: a missing name, hosting other than ``hosted``/``self-hosted``, a
        self-hosted application without an http(s) ``site_url`` or with a ``secret`` (its
        administrator lives on the enterprise's own node), a hosted one with a ``site_url``.
        """
        if not isinstance(prefix, str):
            raise InvalidHandle("prefix must be a string")
        validate_prefix(prefix)
        Handle.parse(admin_identity(prefix).handle)  # the longest handle the prefix will need
        parent = prefix.rpartition(".")[0]
        name_text = _text(name, "name", required=True)
        contact_text = _text(contact, "contact", required=False)
        if hosting not in HOSTINGS:
            raise InvalidValue("hosting must be 'hosted' or 'self-hosted'")
        url = None
        if hosting == "self-hosted":
            url = site_url_of(site_url)
            if secret is not None:
                raise InvalidValue("a self-hosted prefix's administrator is created on its node")
        elif site_url is not None:
            raise InvalidValue("siteUrl is for self-hosted prefixes only")
        if secret is not None and (not isinstance(secret, str) or len(secret) > MAX_SECRET):
            raise InvalidValue(f"secret must be a string of at most {MAX_SECRET} characters")
        if secret is not None and (problem := weakness(secret)) is not None:
            raise InvalidValue(problem)

        homed = {fold(p) for p in await self._store.homed_prefixes()}
        if fold(parent) not in homed:
            raise PrefixNotHomed(
                f"{prefix} does not derive directly from a prefix homed on this node",
                handle=prefix,
            )
        if fold(prefix) in homed or await self._store.get(fold(prefix_handle(prefix))):
            raise HandleAlreadyExists(f"{prefix} is allocated already", handle=prefix)
        holder = await self._applications.holder(fold(prefix))
        if holder is not None:
            raise HandleAlreadyExists(
                f"{prefix} is applied for already (status {holder.status})", handle=prefix
            )
        await self._check_room(parent)
        application = Application(
            id=secrets.token_hex(8),
            prefix=prefix,
            name=name_text,
            contact=contact_text,
            hosting=hosting,
            site_url=url,
            secret_hash=seal_secret(secret) if secret else None,
            status="pending",
            created_at=self._now(),
        )
        if not await self._applications.add(application):  # lost a race with another applicant
            raise HandleAlreadyExists(f"{prefix} is applied for already", handle=prefix)
        return application

    async def _check_room(self, parent: str) -> None:
        """Raise :class:`Throttled` if ``max_pending`` applications under ``parent`` wait
        already: anonymous applicants cannot fill the operator's queue (or the table)."""
        cap = self._max_pending
        if (
            cap is not None
            and len(await self._applications.list([fold(parent)], "pending", cap)) >= cap
        ):
            raise Throttled(
                f"{cap} applications for prefixes under {parent} await a decision already: "
                f"retry after {PENDING_RETRY_AFTER} s",
                retry_after=PENDING_RETRY_AFTER,
                handle=parent,
            )

    # --- reading -------------------------------------------------------------------------

    async def get(self, application_id: str) -> Application:
        """The application (raises 100 if there is none with that id)."""
        application = await self._applications.get(application_id)
        if application is None:
            raise HandleNotFound(f"no prefix application {application_id!r}")
        return application

    async def list(
        self, identity: Ref, status: str | None = None, limit: int = 1000
    ) -> list[Application]:
        """Oldest first, the applications ``identity`` may decide on (see :meth:`approve`).

        Raises 401 if there are applications but it may decide on none of them, 202 for an
        unknown status or a limit outside 1 to :data:`MAX_LIST`.
        """
        if status is not None and status not in STATUSES:
            raise InvalidValue(f"status must be one of {', '.join(STATUSES)}")
        if not 0 < limit <= MAX_LIST:
            raise InvalidValue(f"limit must be from 1 to {MAX_LIST}")
        # Rights are checked on the parents applied under (usually one or two), not on every
        # prefix homed here, which are as many as the enterprises hosted.
        applied_under = await self._applications.parents()
        parents = [p for p in applied_under if await self._may_allocate(identity, p)]
        if applied_under and not parents:
            raise InsufficientPermissions(f"{identity} may decide on no application here")
        return await self._applications.list(parents, status, limit)

    # --- deciding ------------------------------------------------------------------------

    async def approve(self, application_id: str, identity: Ref) -> Approval:
        """Allocate the prefix (see the module docstring); idempotent.

        ``identity`` needs add-derived-prefix on ``0.NA/PARENT`` here (401 otherwise).  Raises
        202 for a rejected application, 101 if ``0.NA/PREFIX`` was created here by other means,
        and the top level's failure (3 unreachable, or the code it refused with); the
        application then stays pending and may be approved again.
        """
        application = await self.get(application_id)
        await self._authorize(identity, application)
        if application.status == "rejected":
            raise InvalidValue(f"application {application.id} was rejected")
        prefix = application.prefix
        if application.status == "pending":
            self._top_level.check()
            hosted = application.hosting == "hosted"
            url = self._site_url if hosted else str(application.site_url)
            [site] = site_values(
                url,
                f"idis node for {prefix}",
                now=int(self._clock()),
                native_port=self._native_port if hosted else None,
                public_key=self._public_key if hosted else None,
            )
            await self._write_prefix_record(prefix, site, identity)
            holder = await self._holder(application)
            await self._top_level.put(prefix_handle(prefix), top_level_values(holder, site), holder)
            if hosted and await self._store.home_prefix(prefix):
                await self._invalidator.written([HOMES_KEY])
            decided = await self._applications.decide(
                application.id, "approved", self._now(), str(identity), None
            )
            application = await self.get(application.id)
            if not decided and application.status != "approved":
                raise InvalidValue(f"application {application.id} was rejected meanwhile")
        if application.hosting == "self-hosted":
            return Approval(application, None, None)
        # Created only after the decision, by whichever call gets there first: a generated
        # secret is then shown exactly once, by a call that reports the prefix approved.
        secret = await self._create_admin(application)
        return Approval(application, admin_identity(prefix), secret)

    async def reject(
        self, application_id: str, identity: Ref, reason: object = None
    ) -> Application:
        """Refuse a pending application, withdrawing anything a failed approval left behind
        here and at the top level; rejecting twice is harmless.

        Same authority as :meth:`approve`; raises 202 for an approved application.
        """
        application = await self.get(application_id)
        await self._authorize(identity, application)
        reason_text = _text(reason, "reason", required=False, limit=MAX_REASON) or None
        if application.status == "rejected":
            return application
        if application.status == "approved":
            raise InvalidValue(f"application {application.id} was approved already")
        await self._withdraw(application)
        if not await self._applications.decide(
            application.id, "rejected", self._now(), str(identity), reason_text
        ):
            application = await self.get(application.id)
            if application.status != "rejected":
                raise InvalidValue(f"application {application.id} was approved meanwhile")
        return await self.get(application.id)

    # --- steps ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _may_allocate(self, identity: Ref, parent_key: str) -> bool:
        record = await self._fetch(fold(prefix_handle(parent_key)))
        return bool(await rights(identity, record, self._fetch) & Right.ADD_DERIVED_PREFIX)

    async def _authorize(self, identity: Ref, application: Application) -> None:
        if not await self._may_allocate(identity, application.parent_key):
            raise InsufficientPermissions(
                f"{identity} lacks ADD_DERIVED_PREFIX on {prefix_handle(application.parent)}"
            )

    async def _holder(self, application: Application) -> Ref:
        """Who writes at the top level: the holder of the prefix the top level delegated to
        this node, which is the least specific ancestor of the parent homed here (the parent
        itself, unless it is an enterprise prefix hosted here)."""
        homed = {fold(p) for p in await self._store.homed_prefixes()}
        delegated = next(
            (p for p in reversed(parent_prefixes(application.parent)) if fold(p) in homed),
            application.parent,
        )
        return holder_identity(delegated)

    @staticmethod
    def _ours(record: Record, prefix: str, *, sited: bool = False) -> bool:
        """True if ``record`` is administered as approval makes ``0.NA/PREFIX`` (and with
        ``sited`` has the HS_SITE an approval adds), whatever its site says."""
        mine = prefix_record(prefix, 0).by_index()
        theirs = record.by_index()
        if sited and (SITE_INDEX not in theirs or theirs[SITE_INDEX].type != HS_SITE):
            return False
        return all(i in theirs and theirs[i].same_content(v) for i, v in mine.items())

    async def _write_prefix_record(self, prefix: str, site: HandleValue, who: Ref) -> None:
        """Create ``0.NA/PREFIX`` here with ``site``, or bring an earlier attempt's up to date.

        A creation is counted against the prefix quotas of ``who`` and of the parent first
        (605 refuses it, writing nothing), and given back if it does not happen."""
        desired = prefix_record(prefix, int(self._clock()), [site])
        key = fold(desired.handle)
        created: list[Handle] = []
        reserved: list[Handle] = []
        try:
            for _ in range(MAX_ATTEMPTS):
                record = await self._store.get(key)
                if record is None:
                    if self._quotas is not None and not reserved:
                        reserved.append(Handle.parse(desired.handle))
                        await self._quotas.reserve(who, reserved)
                    done = await self._store.put(key, desired, None)
                    created = reserved if done else []
                elif not self._ours(record, prefix):
                    raise HandleAlreadyExists(f"{record.handle} exists already", handle=prefix)
                elif record.same_content(desired.values):
                    return
                else:
                    done = await self._store.put(key, desired, record.version)
                if done:
                    await self._invalidator.written([key])
                    return
            raise ServerBusy("too many concurrent writes", handle=desired.handle)
        except QuotaExceeded:
            reserved.clear()  # reserve() counted nothing
            raise
        finally:
            if self._quotas is not None and reserved and not created:
                await self._quotas.release(who, reserved, deleted=False)

    async def _create_admin(self, application: Application) -> str | None:
        """Create ``PREFIX/ADMIN`` unless it exists; the secret if this call generated it."""
        prefix = application.prefix
        key = fold(admin_identity(prefix).handle)
        if await self._store.get(key) is not None:
            return None
        secret = None
        secret_hash = application.secret_hash
        if secret_hash is None:
            secret = generate_secret()
            secret_hash = seal_secret(secret)
        record = admin_record(prefix, secret_hash, int(self._clock()))
        if not await self._store.put(key, record, None):
            return None
        await self._invalidator.written([key])
        return secret

    async def _withdraw(self, application: Application) -> None:
        """Undo what an approval that failed before its decision wrote; nothing if none ran.

        An approval writes the local prefix record first, so without it nothing else was
        attempted; with it, the top-level record is deleted before the local one, so that a
        failure here leaves the evidence for the next attempt.
        """
        prefix = application.prefix
        key = fold(prefix_handle(prefix))
        record = await self._store.get(key)
        if record is None or not self._ours(record, prefix, sited=True):
            return
        self._top_level.check()
        await self._top_level.delete(prefix_handle(prefix), await self._holder(application))
        if application.hosting == "hosted" and await self._store.unhome_prefix(prefix):
            await self._invalidator.written([HOMES_KEY])
        if await self._store.delete(key, record.version):
            await self._invalidator.written([key])
            if self._quotas is not None:  # the parent's count of prefixes goes down again
                await self._quotas.release(None, [Handle.parse(record.handle)], deleted=True)
