"""Enterprise prefix allocation (registry/enterprise.py): the application store's contract on
every backend, the migration, and the workflow on every backend against a real top-level node.

The top level is a real ``idis serve`` process (homing 88, with 88.100 allocated to this
node's holder identity), shared by the module; the secondary node is the service itself, on
the memory twin, SQLite or PostgreSQL.  Tests use enterprise prefixes of their own, because the
top level keeps what each of them records.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from nodes.federation import TopLevelClient
from nodes.processes import free_ports, run_cli
from registry import migrate
from registry.enterprise import (
    Application,
    ApplicationStore,
    EnterprisePrefixes,
    holder_identity,
    top_level_values,
)
from registry.invalidation import Invalidator
from registry.prefixes import init_prefix, site_values
from registry.quotas import QuotaLimits, Quotas
from registry.secrets import verify_secret
from registry.stores.applications import MemoryApplications, SqlApplications
from registry.stores.counters import MemoryCounters, SqlCounters
from registry.stores.sql import SqlStore, make_engine
from resolver.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InsufficientPermissions,
    InvalidHandle,
    InvalidValue,
    PeerRefused,
    PrefixNotHomed,
    QuotaExceeded,
    ServerError,
    UpstreamUnavailable,
)
from resolver.identifiers import fold
from resolver.memory import LocalGenerations, MemoryStore
from resolver.ports import RecordStore
from resolver.sites import parse_site
from resolver.values import HS_SITE, Record, Ref

# The node processes of the end-to-end suite, reused here for the real top level.
sys.path.insert(0, str(Path(__file__).parent / "e2e"))
from nodeproc import NodeProcess, start_node

HOLDER_SECRET = "holder-secret-88.100"
OPERATOR_SECRET = "operator-secret-88.100"
SITE = "http://127.0.0.1:18002"
"""The secondary node's own base URL (what hosted prefixes' HS_SITE names); nothing runs there."""
ENTERPRISE_SITE = "https://ent.example:8443"
T0 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)

_numbers = itertools.count(1000)


def new_prefix() -> str:
    """An enterprise prefix under 88.100 that no other test uses."""
    return f"88.100.{next(_numbers)}"


# --- the application store, on every backend ---------------------------------------------


@pytest.fixture
async def applications(store_url: str | None) -> AsyncIterator[ApplicationStore]:
    """An empty ApplicationStore of each backend (memory, SQLite, PostgreSQL)."""
    store: ApplicationStore = (
        MemoryApplications() if store_url is None else SqlApplications(store_url)
    )
    try:
        yield store
    finally:
        await store.close()


def application(id: str, prefix: str, *, minutes: int = 0, **changes: Any) -> Application:
    fields: dict[str, Any] = {
        "id": id,
        "prefix": prefix,
        "name": "ACME 製造",
        "contact": "ops@acme.example",
        "hosting": "hosted",
        "site_url": None,
        "secret_hash": None,
        "status": "pending",
        "created_at": T0 + timedelta(minutes=minutes),
    }
    fields.update(changes)
    return Application(**fields)


async def test_store_round_trips_applications(applications: ApplicationStore) -> None:
    hosted = application("a1", "88.100.1", secret_hash="scrypt$1$2$3$4$5")
    own = application("a2", "88.100.Ab", hosting="self-hosted", site_url=ENTERPRISE_SITE, minutes=1)
    assert await applications.add(hosted)
    assert await applications.add(own)
    assert await applications.get("a1") == hosted
    assert await applications.get("a2") == own
    assert await applications.get("nope") is None
    assert await applications.holder("88.100.AB") == own


async def test_an_open_application_holds_its_prefix(applications: ApplicationStore) -> None:
    assert await applications.add(application("a1", "88.100.x"))
    # Another case of the same prefix is the same prefix.
    assert not await applications.add(application("a2", "88.100.X"))
    decided = T0 + timedelta(hours=1)
    assert await applications.decide("a1", "approved", decided, "300:88.100/ADMIN", None)
    assert not await applications.add(application("a3", "88.100.X"))
    assert (await applications.holder("88.100.X")) == application(
        "a1", "88.100.x", status="approved", decided_at=decided, decided_by="300:88.100/ADMIN"
    )


async def test_a_rejected_application_frees_its_prefix(applications: ApplicationStore) -> None:
    assert await applications.add(application("a1", "88.100.9"))
    assert await applications.decide("a1", "rejected", T0, "300:88.100/ADMIN", "no such firm")
    assert await applications.holder("88.100.9") is None
    assert await applications.add(application("a2", "88.100.9"))
    assert not await applications.add(application("a3", "88.100.9"))
    assert (await applications.get("a1")) == application(
        "a1",
        "88.100.9",
        status="rejected",
        decided_at=T0,
        decided_by="300:88.100/ADMIN",
        reason="no such firm",
    )


async def test_many_applications_are_each_accepted_once(applications: ApplicationStore) -> None:
    # PostgreSQL plans a prepared statement generically after five runs: the conflict target
    # must still match the partial index then (the sixth application used to answer 500).
    for n in range(12):
        assert await applications.add(application(f"a{n}", f"88.100.{n}", minutes=n))
        assert not await applications.add(application(f"b{n}", f"88.100.{n}", minutes=n))
    assert len(await applications.list(["88.100"], "pending", 100)) == 12


async def test_only_a_pending_application_is_decided(applications: ApplicationStore) -> None:
    assert await applications.add(application("a1", "88.100.1"))
    assert await applications.decide("a1", "approved", T0, "300:88.100/ADMIN", None)
    assert not await applications.decide("a1", "rejected", T0, "300:88.100/ADMIN", "late")
    assert not await applications.decide("missing", "approved", T0, "300:88.100/ADMIN", None)
    assert (await applications.get("a1")).status == "approved"  # type: ignore[union-attr]


async def test_listing_by_parent_and_status_oldest_first(applications: ApplicationStore) -> None:
    for n, (id, prefix) in enumerate(
        [("c", "88.100.3"), ("a", "88.100.1"), ("x", "88.200.1"), ("b", "88.100.2")]
    ):
        assert await applications.add(application(id, prefix, minutes=n))
    assert await applications.decide("a", "rejected", T0, "300:88.100/ADMIN", None)

    def ids(found: list[Application]) -> list[str]:
        return [a.id for a in found]

    assert ids(await applications.list(["88.100"], None, 100)) == ["c", "a", "b"]
    assert ids(await applications.list(["88.100"], "pending", 100)) == ["c", "b"]
    assert ids(await applications.list(["88.100", "88.200"], "pending", 2)) == ["c", "x"]
    assert ids(await applications.list(["88.300"], None, 100)) == []
    assert ids(await applications.list([], None, 100)) == []
    assert sorted(await applications.parents()) == ["88.100", "88.200"]


# --- the migration -------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    async def inspect() -> set[str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(inspect())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_0003_downgrades_and_upgrades(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'idis.db'}"
    else:
        url = str(request.getfixturevalue("pg_empty_url"))
    migrate.upgrade(url)
    assert "prefix_applications" in _tables(url)
    migrate.downgrade(url, "0002")
    assert "prefix_applications" not in _tables(url)
    assert {"handles", "prefixes"} <= _tables(url)
    migrate.upgrade(url)
    assert "prefix_applications" in _tables(url)


# --- the workflow, against a real top level ---------------------------------------------


@dataclass
class TopLevel:
    node: NodeProcess
    holder_secret_file: Path

    def record(self, prefix: str) -> dict[str, Any]:
        """What the top level answers for ``0.NA/PREFIX`` (authoritatively)."""
        response = httpx.get(
            f"{self.node.base_url}/api/handles/0.NA/{prefix}", params={"auth": "true"}
        )
        return dict(response.json())


@pytest.fixture(scope="module")
def top_level(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TopLevel]:
    """A top-level node homing 88 that has allocated 88.100 to this node's holder identity."""
    workdir = tmp_path_factory.mktemp("top-level")
    node = start_node(workdir, prefix="88", extra_env={"IDIS_ROLE": "top-level"})
    try:
        holder = workdir / "holder-secret"
        holder.write_text(HOLDER_SECRET + "\n", encoding="utf-8")
        run_cli(node.env, "prefix", "allocate", "88.100", "--secret-file", str(holder))
        yield TopLevel(node, holder)
    finally:
        node.stop()


@dataclass
class Secondary:
    """The secondary node 88.100 as the workflow sees it: its registry and the service."""

    store: RecordStore
    invalidator: Invalidator
    generations: LocalGenerations
    applications: ApplicationStore
    top_level: TopLevel
    service: EnterprisePrefixes
    operator: Ref
    stranger: Ref

    def with_top_level(self, urls: list[str], secret_file: Path | None) -> EnterprisePrefixes:
        """The same node, writing to other top-level URLs or with another holder secret."""
        return EnterprisePrefixes(
            self.applications,
            self.store,
            self.invalidator,
            self.store.get,
            TopLevelClient(urls, secret_file),
            SITE,
        )

    async def record(self, handle: str) -> Record | None:
        return await self.store.get(fold(handle))

    async def homed(self, prefix: str) -> bool:
        return fold(prefix) in {fold(p) for p in await self.store.homed_prefixes()}


@pytest.fixture
async def secondary(store_url: str | None, top_level: TopLevel) -> AsyncIterator[Secondary]:
    """The secondary node on each backend, homing 88.100 (administrator ``300:88.100/ADMIN``)
    and the unrelated 77 (whose administrator is the stranger)."""
    store: RecordStore
    applications: ApplicationStore
    if store_url is None:
        store, applications = MemoryStore(), MemoryApplications()
    else:
        store, applications = SqlStore(store_url), SqlApplications(store_url)
    generations = LocalGenerations()
    invalidator = Invalidator(generations)
    operator = (await init_prefix(store, invalidator, "88.100", OPERATOR_SECRET)).identity
    stranger = (await init_prefix(store, invalidator, "77", "stranger-secret")).identity
    service = EnterprisePrefixes(
        applications,
        store,
        invalidator,
        store.get,
        TopLevelClient([top_level.node.base_url], top_level.holder_secret_file),
        SITE,
    )
    try:
        yield Secondary(
            store, invalidator, generations, applications, top_level, service, operator, stranger
        )
    finally:
        await service.close()
        await store.close()


def site_of(values: list[Any]) -> list[str]:
    """The base URLs named by the HS_SITE among ``values`` (REST JSON or HandleValue)."""
    urls: list[str] = []
    for value in values:
        if isinstance(value, dict):
            kind, data = value["type"], value["data"]["value"]
        else:
            kind, data = value.type, value.data.value
        site = parse_site(data) if kind == HS_SITE else None
        urls.extend(site.urls if site else ())
    return urls


BAD_APPLICATIONS: list[tuple[dict[str, Any], type[HandleError]]] = [
    ({"prefix": "88.100..1"}, InvalidHandle),
    ({"prefix": "88.100/1"}, InvalidHandle),
    ({"prefix": 881001}, InvalidHandle),
    ({"prefix": "88"}, PrefixNotHomed),  # 88 derives from nothing homed here
    ({"prefix": "88.200.1"}, PrefixNotHomed),
    ({"prefix": "88.100.1.2"}, PrefixNotHomed),  # not derived directly from 88.100
    ({"prefix": "88.100.1", "name": "  "}, InvalidValue),
    ({"prefix": "88.100.1", "name": "x" * 201}, InvalidValue),
    ({"prefix": "88.100.1", "name": "a\nb"}, InvalidValue),
    ({"prefix": "88.100.1", "contact": 5}, InvalidValue),
    ({"prefix": "88.100.1", "hosting": "cloud"}, InvalidValue),
    ({"prefix": "88.100.1", "hosting": "self-hosted"}, InvalidValue),
    ({"prefix": "88.100.1", "hosting": "self-hosted", "site_url": "ftp://x.example"}, InvalidValue),
    ({"prefix": "88.100.1", "hosting": "self-hosted", "site_url": "http://"}, InvalidValue),
    ({"prefix": "88.100.1", "hosting": "self-hosted", "site_url": "http://x:99999"}, InvalidValue),
    ({"prefix": "88.100.1", "hosting": "self-hosted", "site_url": "http://x/a"}, InvalidValue),
    (
        {"prefix": "88.100.1", "hosting": "self-hosted", "site_url": SITE, "secret": "s"},
        InvalidValue,
    ),
    ({"prefix": "88.100.1", "site_url": ENTERPRISE_SITE}, InvalidValue),
    ({"prefix": "88.100.1", "secret": ""}, InvalidValue),
    ({"prefix": "88.100.1", "secret": ["s"]}, InvalidValue),
    ({"prefix": "88.100.1", "secret": "s" * 1025}, InvalidValue),
    ({"prefix": "88.100.1", "secret": "password"}, InvalidValue),  # too weak
    ({"prefix": "88.100.1", "secret": "abcabcabcabcabc"}, InvalidValue),  # too few different
    ({"prefix": "77"}, PrefixNotHomed),
]


@pytest.mark.parametrize(("fields", "error"), BAD_APPLICATIONS)
async def test_apply_refuses_bad_applications(
    secondary: Secondary, fields: dict[str, Any], error: type[HandleError]
) -> None:
    with pytest.raises(error):
        await secondary.service.apply(**{"name": "ACME", **fields})
    assert await secondary.applications.holder("88.100.1") is None


async def test_apply_refuses_allocated_and_applied_for_prefixes(secondary: Secondary) -> None:
    prefix = new_prefix()
    # Allocated by other means: its prefix record exists here already.
    await init_prefix(secondary.store, secondary.invalidator, prefix, "s")
    with pytest.raises(HandleAlreadyExists, match="allocated already"):
        await secondary.service.apply(prefix, "ACME")
    with pytest.raises(PrefixNotHomed):
        await secondary.service.apply("88.100", "ACME")  # homed, but 88 is not

    other = new_prefix()
    first = await secondary.service.apply(other, "ACME")
    with pytest.raises(HandleAlreadyExists, match="applied for already"):
        await secondary.service.apply(other.upper(), "Imposter")
    assert await secondary.service.get(first.id) == first


async def test_concurrent_applications_for_one_prefix_admit_one(secondary: Secondary) -> None:
    prefix = new_prefix()
    results = await asyncio.gather(
        *(secondary.service.apply(prefix, f"firm {n}") for n in range(5)), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, Application)]
    assert len(accepted) == 1
    assert all(isinstance(r, HandleAlreadyExists) for r in results if r not in accepted)


async def test_hosted_approval_with_the_applicants_secret(secondary: Secondary) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(
        prefix, "  ACME  ", "ops@acme.example", secret="enterprise-secret"
    )
    assert (applied.status, applied.name, applied.hosting) == ("pending", "ACME", "hosted")
    assert applied.secret_hash is not None and verify_secret(
        "enterprise-secret", applied.secret_hash
    )

    approval = await secondary.service.approve(applied.id, secondary.operator)

    assert approval.secret is None  # the enterprise knows its secret already
    assert approval.admin == Ref(f"{prefix}/ADMIN", 300)
    decided = approval.application
    assert decided.status == "approved"
    assert decided.decided_by == "300:88.100/ADMIN"
    assert decided.decided_at is not None and decided.decided_at >= decided.created_at
    # Here: the prefix record names its administrator and this node as its site; homed.
    na = await secondary.record(f"0.NA/{prefix}")
    assert na is not None
    assert site_of(list(na.values)) == [SITE]
    assert all(v.timestamp > 0 for v in na.values)
    assert await secondary.homed(prefix)
    admin = await secondary.record(f"{prefix}/ADMIN")
    assert admin is not None
    [key] = [v for v in admin.values if v.type == "HS_SECKEY"]
    assert verify_secret("enterprise-secret", key.data.value)
    # The top level: the same site, administered by this node's holder identity.
    top = secondary.top_level.record(prefix)
    assert top["responseCode"] == 1
    assert site_of(top["values"]) == [SITE]
    [top_admin] = [v for v in top["values"] if v["type"] == "HS_ADMIN"]
    assert top_admin["data"]["value"]["handle"] == "0.NA/88.100"
    assert top_admin["data"]["value"]["index"] == 300

    # Approving again changes nothing and shows no secret; applying again is refused.
    again = await secondary.service.approve(applied.id, secondary.operator)
    assert again == approval
    with pytest.raises(HandleAlreadyExists):
        await secondary.service.apply(prefix, "ACME")


async def test_hosted_approval_generates_a_secret_shown_once(secondary: Secondary) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(prefix, "ACME")
    approvals = await asyncio.gather(
        *(secondary.service.approve(applied.id, secondary.operator) for _ in range(3))
    )
    secrets = [a.secret for a in approvals if a.secret is not None]
    assert len(secrets) == 1
    assert {a.application.status for a in approvals} == {"approved"}
    admin = await secondary.record(f"{prefix}/ADMIN")
    assert admin is not None
    [key] = [v for v in admin.values if v.type == "HS_SECKEY"]
    assert verify_secret(secrets[0], key.data.value)
    assert (await secondary.service.approve(applied.id, secondary.operator)).secret is None


async def test_hosted_approval_names_this_nodes_native_interfaces_and_key(
    secondary: Secondary,
) -> None:
    """A native client finding the prefix at the top level must find this node's TCP and UDP
    interfaces and its key in the HS_SITE (what ``idis federation join`` writes too)."""
    key = {"kty": "RSA", "n": "AQAB", "e": "AQAB"}
    service = EnterprisePrefixes(
        secondary.applications,
        secondary.store,
        secondary.invalidator,
        secondary.store.get,
        TopLevelClient([secondary.top_level.node.base_url], secondary.top_level.holder_secret_file),
        SITE,
        native_port=2641,
        public_key=key,
    )
    prefix = new_prefix()
    applied = await service.apply(prefix, "ACME", secret="enterprise-secret")
    await service.approve(applied.id, secondary.operator)

    [top_site] = [v for v in secondary.top_level.record(prefix)["values"] if v["type"] == "HS_SITE"]
    [server] = top_site["data"]["value"]["servers"]
    protocols = {(i["protocol"], i["port"]) for i in server["interfaces"]}
    assert {("TCP", 2641), ("UDP", 2641)} <= protocols
    assert server["publicKey"]["value"] == key


async def test_self_hosted_approval_points_at_the_enterprise(secondary: Secondary) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(
        prefix, "Own Node Co", hosting="self-hosted", site_url=ENTERPRISE_SITE + "/"
    )
    assert applied.site_url == ENTERPRISE_SITE

    approval = await secondary.service.approve(applied.id, secondary.operator)

    assert (approval.admin, approval.secret) == (None, None)
    assert approval.application.status == "approved"
    na = await secondary.record(f"0.NA/{prefix}")
    assert na is not None and site_of(list(na.values)) == [ENTERPRISE_SITE]
    # Nothing lives here: the enterprise homes the prefix and creates its admin on its node.
    assert not await secondary.homed(prefix)
    assert await secondary.record(f"{prefix}/ADMIN") is None
    assert site_of(secondary.top_level.record(prefix)["values"]) == [ENTERPRISE_SITE]


async def test_only_the_parents_administrators_decide(secondary: Secondary) -> None:
    applied = await secondary.service.apply(new_prefix(), "ACME")
    with pytest.raises(InsufficientPermissions):
        await secondary.service.approve(applied.id, secondary.stranger)
    with pytest.raises(InsufficientPermissions):
        await secondary.service.reject(applied.id, secondary.stranger, "no")
    with pytest.raises(InsufficientPermissions):
        await secondary.service.list(secondary.stranger)
    nobody = Ref("88.100/NOBODY", 300)
    with pytest.raises(InsufficientPermissions):
        await secondary.service.list(nobody)
    with pytest.raises(InsufficientPermissions):
        await secondary.service.approve(applied.id, nobody)
    # Nothing happened meanwhile.
    assert (await secondary.service.get(applied.id)).status == "pending"
    assert await secondary.record(f"0.NA/{applied.prefix}") is None
    with pytest.raises(HandleNotFound):
        await secondary.service.approve("0123456789abcdef", secondary.operator)


async def test_approval_keeps_off_a_prefix_record_made_by_other_means(
    secondary: Secondary,
) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(prefix, "ACME")
    # Someone with the parent's rights created the record meanwhile, administered otherwise.
    foreign = Record(f"0.NA/{prefix}", (site_values(SITE, "elsewhere")[0],))
    assert await secondary.store.put(fold(foreign.handle), foreign, None)
    with pytest.raises(HandleAlreadyExists):
        await secondary.service.approve(applied.id, secondary.operator)
    assert (await secondary.service.get(applied.id)).status == "pending"
    assert await secondary.record(foreign.handle) == Record(foreign.handle, foreign.values, 1)
    assert secondary.top_level.record(prefix)["responseCode"] != 1


async def test_a_failed_top_level_write_leaves_the_application_approvable(
    secondary: Secondary, tmp_path: Path
) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(prefix, "ACME", secret="enterprise-secret")
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not the holder secret\n", encoding="utf-8")
    nobody = f"http://127.0.0.1:{free_ports(1)[0]}"
    attempts: list[tuple[EnterprisePrefixes, type[HandleError]]] = [
        (secondary.with_top_level([nobody], wrong), UpstreamUnavailable),
        (secondary.with_top_level([secondary.top_level.node.base_url], wrong), PeerRefused),
        (secondary.with_top_level([], wrong), ServerError),
        (secondary.with_top_level([secondary.top_level.node.base_url], None), ServerError),
    ]
    for service, error in attempts:
        with pytest.raises(error):
            await service.approve(applied.id, secondary.operator)
        assert (await secondary.service.get(applied.id)).status == "pending"
        assert not await secondary.homed(prefix)
        assert await secondary.record(f"{prefix}/ADMIN") is None
    assert secondary.top_level.record(prefix)["responseCode"] != 1

    approval = await secondary.service.approve(applied.id, secondary.operator)
    assert approval.application.status == "approved"
    assert await secondary.homed(prefix)
    assert site_of(secondary.top_level.record(prefix)["values"]) == [SITE]


async def test_rejecting(secondary: Secondary) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(prefix, "ACME")
    rejected = await secondary.service.reject(applied.id, secondary.operator, " unknown firm ")
    assert (rejected.status, rejected.reason, rejected.decided_by) == (
        "rejected",
        "unknown firm",
        "300:88.100/ADMIN",
    )
    assert await secondary.service.reject(applied.id, secondary.operator, "again") == rejected
    with pytest.raises(InvalidValue, match="rejected"):
        await secondary.service.approve(applied.id, secondary.operator)
    with pytest.raises(InvalidValue):
        await secondary.service.reject(applied.id, secondary.operator, "x" * 2001)
    # The prefix is free again: a new application gets a new id.
    second = await secondary.service.apply(prefix, "ACME, properly")
    assert second.id != applied.id
    await secondary.service.approve(second.id, secondary.operator)
    with pytest.raises(InvalidValue, match="approved"):
        await secondary.service.reject(second.id, secondary.operator, None)


async def test_rejecting_withdraws_what_a_failed_approval_wrote(
    secondary: Secondary, tmp_path: Path
) -> None:
    prefix = new_prefix()
    applied = await secondary.service.apply(prefix, "ACME")
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not the holder secret\n", encoding="utf-8")
    with pytest.raises(PeerRefused):
        await secondary.with_top_level([secondary.top_level.node.base_url], wrong).approve(
            applied.id, secondary.operator
        )
    assert await secondary.record(f"0.NA/{prefix}") is not None  # the first step was done
    # Say the top level did record it, but its answer was lost: written as approval writes it.
    na = await secondary.record(f"0.NA/{prefix}")
    assert na is not None
    [site] = [v for v in na.values if v.type == HS_SITE]
    client = TopLevelClient(
        [secondary.top_level.node.base_url], secondary.top_level.holder_secret_file
    )
    holder = holder_identity("88.100")
    await client.put(f"0.NA/{prefix}", top_level_values(holder, site), holder)
    assert secondary.top_level.record(prefix)["responseCode"] == 1

    await secondary.service.reject(applied.id, secondary.operator, "changed our minds")

    assert await secondary.record(f"0.NA/{prefix}") is None
    assert not await secondary.homed(prefix)
    assert secondary.top_level.record(prefix)["responseCode"] != 1
    # Nothing is left to block the next applicant.
    again = await secondary.service.apply(prefix, "Next Co")
    assert (await secondary.service.approve(again.id, secondary.operator)).secret is not None


async def test_an_enterprise_hosted_here_allocates_below_its_prefix(
    secondary: Secondary,
) -> None:
    enterprise = new_prefix()
    hosted = await secondary.service.apply(enterprise, "ACME", secret="acme-secret-1")
    await secondary.service.approve(hosted.id, secondary.operator)
    acme = Ref(f"{enterprise}/ADMIN", 300)
    # ACME administers its prefix record here, so decides on prefixes derived from it; the
    # node writes them at the top level as the holder of 88.100, as it wrote ACME's.
    division = await secondary.service.apply(f"{enterprise}.7", "ACME Tools", secret="tools-secr-7")
    assert [a.id for a in await secondary.service.list(acme)] == [division.id]
    with pytest.raises(InsufficientPermissions):
        await secondary.service.approve(division.id, secondary.operator)
    approval = await secondary.service.approve(division.id, acme)
    assert approval.admin == Ref(f"{enterprise}.7/ADMIN", 300)
    top = secondary.top_level.record(f"{enterprise}.7")
    assert site_of(top["values"]) == [SITE]
    [top_admin] = [v for v in top["values"] if v["type"] == "HS_ADMIN"]
    assert top_admin["data"]["value"]["handle"] == "0.NA/88.100"


async def test_listing_without_applications_is_empty(secondary: Secondary) -> None:
    assert await secondary.service.list(secondary.operator) == []


async def test_listing(secondary: Secondary) -> None:
    first = await secondary.service.apply(new_prefix(), "First")
    second = await secondary.service.apply(new_prefix(), "Second")
    third = await secondary.service.apply(new_prefix(), "Third")
    await secondary.service.reject(second.id, secondary.operator, None)

    def ids(found: list[Application]) -> list[str]:
        return [a.id for a in found]

    assert ids(await secondary.service.list(secondary.operator)) == [first.id, second.id, third.id]
    pending = await secondary.service.list(secondary.operator, "pending")
    assert ids(pending) == [first.id, third.id]
    assert ids(await secondary.service.list(secondary.operator, "rejected")) == [second.id]
    assert ids(await secondary.service.list(secondary.operator, limit=1)) == [first.id]
    for status, limit in (("open", 10), (None, 0), (None, 10_001)):
        with pytest.raises(InvalidValue):
            await secondary.service.list(secondary.operator, status, limit)


async def test_approvals_count_against_the_prefix_quota(
    secondary: Secondary, store_url: str | None
) -> None:
    """Approving creates ``0.NA/PREFIX``: a prefix creation by the approver under the parent,
    refused with 605 past the quota (counted in the database, or in memory without one)."""
    counters = SqlCounters(store_url) if store_url else MemoryCounters()
    quotas = Quotas(QuotaLimits(prefixes_per_prefix=1), counters, counters)
    service = EnterprisePrefixes(
        secondary.applications,
        secondary.store,
        secondary.invalidator,
        secondary.store.get,
        TopLevelClient([secondary.top_level.node.base_url], secondary.top_level.holder_secret_file),
        SITE,
        quotas=quotas,
    )
    first, second = new_prefix(), new_prefix()
    applied = [await service.apply(prefix, "ACME") for prefix in (first, second)]
    await service.approve(applied[0].id, secondary.operator)
    with pytest.raises(QuotaExceeded) as refused:
        await service.approve(applied[1].id, secondary.operator)
    assert refused.value.code == QuotaExceeded.PREFIXES
    # Nothing of the refused approval was written, here or at the top level; it stays pending.
    assert await secondary.record(f"0.NA/{second}") is None
    assert not await secondary.homed(second)
    assert secondary.top_level.record(second)["responseCode"] == 100
    assert (await service.get(applied[1].id)).status == "pending"
    # The refusal counted nothing: the parent holds one prefix, and a second still does not go.
    await service.reject(applied[1].id, secondary.operator)
    again = await service.apply(second, "ACME")
    with pytest.raises(QuotaExceeded):
        await service.approve(again.id, secondary.operator)
    assert await counters.add({("prefixes:prefix:88.100", ""): 0}) == {
        ("prefixes:prefix:88.100", ""): 1
    }
    await quotas.close()
