"""HS_ADMIN rights: direct grants, HS_VLIST groups (nested, cyclic), wildcards and unions."""

from __future__ import annotations

from registry.authorization import ALL_RIGHTS, Right, admins, rights
from resolver.identifiers import fold
from resolver.values import AdminRef, Data, HandleValue, Record, Ref

ME = Ref("88.100.1/ADMIN", 300)
STRANGER = Ref("88.100.2/ADMIN", 300)
READ = int(Right.READ_VALUE)
WRITE = int(Right.ADD_VALUE | Right.MODIFY_VALUE)


def admin(index: int, handle: str, ref_index: int, permissions: int) -> HandleValue:
    return HandleValue(index, "HS_ADMIN", Data("admin", AdminRef(handle, ref_index, permissions)))


def vlist(index: int, *members: Ref) -> HandleValue:
    return HandleValue(index, "HS_VLIST", Data("vlist", members))


class Fetcher:
    def __init__(self, *records: Record) -> None:
        self.records = {fold(r.handle): r for r in records}
        self.calls: list[str] = []

    async def __call__(self, key: str) -> Record | None:
        self.calls.append(key)
        return self.records.get(key)


def target(*values: HandleValue) -> Record:
    return Record("88.100.1/ABC", values)


async def test_no_record_grants_nothing() -> None:
    assert await rights(ME, None, Fetcher()) == 0


async def test_direct_admin_grants_its_permissions() -> None:
    record = target(admin(100, "88.100.1/ADMIN", 300, WRITE))
    assert await rights(ME, record, Fetcher()) == WRITE


async def test_direct_admin_matches_the_handle_case_insensitively() -> None:
    record = target(admin(100, "88.100.1/admin", 300, WRITE))
    assert await rights(ME, record, Fetcher()) == WRITE


async def test_direct_admin_of_another_index_grants_nothing() -> None:
    record = target(admin(100, "88.100.1/ADMIN", 301, WRITE))
    assert await rights(ME, record, Fetcher()) == 0


async def test_index_zero_admin_matches_any_key_of_the_handle() -> None:
    record = target(admin(100, "88.100.1/ADMIN", 0, WRITE))
    assert await rights(ME, record, Fetcher()) == WRITE
    assert await rights(Ref("88.100.1/ADMIN", 301), record, Fetcher()) == WRITE
    assert await rights(STRANGER, record, Fetcher()) == 0


async def test_group_member_gets_the_rights() -> None:
    group = Record("0.NA/88.100.1", (vlist(200, ME),))
    record = target(admin(100, "0.NA/88.100.1", 200, ALL_RIGHTS))
    assert await rights(ME, record, Fetcher(group)) == ALL_RIGHTS


async def test_non_member_of_a_group_gets_nothing() -> None:
    group = Record("0.NA/88.100.1", (vlist(200, ME),))
    record = target(admin(100, "0.NA/88.100.1", 200, ALL_RIGHTS))
    assert await rights(STRANGER, record, Fetcher(group)) == 0


async def test_group_ref_names_one_vlist_index() -> None:
    group = Record("0.NA/88.100.1", (vlist(200, STRANGER), vlist(201, ME)))
    record = target(admin(100, "0.NA/88.100.1", 200, ALL_RIGHTS))
    assert await rights(ME, record, Fetcher(group)) == 0


async def test_group_ref_index_zero_means_every_vlist_of_the_handle() -> None:
    group = Record("0.NA/88.100.1", (vlist(200, STRANGER), vlist(201, ME)))
    record = target(admin(100, "0.NA/88.100.1", 0, ALL_RIGHTS))
    assert await rights(ME, record, Fetcher(group)) == ALL_RIGHTS


async def test_member_with_index_zero_matches_any_key_of_its_handle() -> None:
    group = Record("0.NA/88.100.1", (vlist(200, Ref("88.100.1/ADMIN", 0)),))
    record = target(admin(100, "0.NA/88.100.1", 200, WRITE))
    assert await rights(ME, record, Fetcher(group)) == WRITE


async def test_missing_group_record_grants_nothing() -> None:
    record = target(admin(100, "0.NA/88.100.9", 200, ALL_RIGHTS))
    assert await rights(ME, record, Fetcher()) == 0


async def test_nested_groups_grant_recursively() -> None:
    outer = Record("88.100.1/OUTER", (vlist(200, Ref("88.100.1/INNER", 200)),))
    inner = Record("88.100.1/INNER", (vlist(200, ME),))
    record = target(admin(100, "88.100.1/OUTER", 200, WRITE))
    assert await rights(ME, record, Fetcher(outer, inner)) == WRITE


async def test_group_cycle_terminates_and_grants_nothing_to_a_stranger() -> None:
    a = Record("88.100.1/A", (vlist(200, Ref("88.100.1/B", 200)),))
    b = Record("88.100.1/B", (vlist(200, Ref("88.100.1/A", 200)),))
    record = target(admin(100, "88.100.1/A", 200, ALL_RIGHTS))
    fetch = Fetcher(a, b)
    assert await rights(STRANGER, record, fetch) == 0
    assert len(fetch.calls) == 2  # each group read once


async def test_group_cycle_still_grants_to_a_member() -> None:
    a = Record("88.100.1/A", (vlist(200, Ref("88.100.1/B", 200)),))
    b = Record("88.100.1/B", (vlist(200, Ref("88.100.1/A", 200), ME),))
    record = target(admin(100, "88.100.1/A", 200, WRITE))
    assert await rights(ME, record, Fetcher(a, b)) == WRITE


async def test_self_listing_group_terminates() -> None:
    a = Record("88.100.1/A", (vlist(200, Ref("88.100.1/A", 200)),))
    record = target(admin(100, "88.100.1/A", 200, ALL_RIGHTS))
    assert await rights(STRANGER, record, Fetcher(a)) == 0


async def test_very_deep_nesting_grants_nothing() -> None:
    depth = 40
    groups = [
        Record(f"88.100.1/G{n}", (vlist(200, Ref(f"88.100.1/G{n + 1}", 200)),))
        for n in range(depth)
    ]
    groups.append(Record(f"88.100.1/G{depth}", (vlist(200, ME),)))
    record = target(admin(100, "88.100.1/G0", 200, WRITE))
    assert await rights(ME, record, Fetcher(*groups)) == 0


async def test_rights_of_several_admin_values_are_united() -> None:
    group = Record("0.NA/88.100.1", (vlist(200, ME),))
    record = target(
        admin(100, "88.100.1/ADMIN", 300, READ),
        admin(101, "0.NA/88.100.1", 200, WRITE),
        admin(102, "88.100.2/ADMIN", 300, int(Right.DELETE_HANDLE)),
    )
    assert await rights(ME, record, Fetcher(group)) == READ | WRITE


async def test_only_hs_admin_values_grant() -> None:
    not_admin = HandleValue(100, "URL", Data("admin", AdminRef("88.100.1/ADMIN", 300, ALL_RIGHTS)))
    assert await rights(ME, target(not_admin), Fetcher()) == 0


def test_admins_lists_the_admin_refs() -> None:
    values = [admin(100, "88/X", 300, 1), vlist(200, ME)]
    assert admins(values) == [AdminRef("88/X", 300, 1)]


def test_right_bits_follow_the_handle_numbering() -> None:
    assert Right.ADD_HANDLE == 1
    assert Right.LIST_HANDLES == 1 << 11
    assert format(ALL_RIGHTS & ~Right.LIST_HANDLES, "012b") == "011111111111"
