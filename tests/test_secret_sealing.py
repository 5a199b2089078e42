"""Secrets at rest on every store: sealed on write, legacy scrypt hashes re-sealed on login."""

from __future__ import annotations

import base64
from dataclasses import replace

from registry.authentication import Authenticator
from registry.invalidation import Invalidator
from registry.prefixes import init_prefix
from registry.secrets import is_stored, legacy_hash, open_secret, verify_secret
from registry.service import Registrar
from resolver.homes import Homes
from resolver.identifiers import Handle
from resolver.memory import LocalGenerations, MemorySharedCache
from resolver.ports import RecordStore
from resolver.values import HS_SECKEY, Data, Record, Ref

SECRET = "legacy-secret-42"


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def test_secrets_are_sealed_and_legacy_ones_resealed_on_login(store: RecordStore) -> None:
    generations = LocalGenerations()
    invalidator = Invalidator(generations, MemorySharedCache())
    admin = (await init_prefix(store, invalidator, "88.100.9", SECRET)).identity
    handle = Handle.parse(admin.handle)

    async def seckey() -> str:
        record = await store.get(handle.key)
        assert record is not None
        value = record.by_index()[admin.index]
        assert value.type == HS_SECKEY
        return str(value.data.value)

    sealed = await seckey()
    assert SECRET not in sealed and open_secret(sealed) == SECRET.encode()

    # A record written by an earlier version: the secret as a scrypt hash.
    record = await store.get(handle.key)
    assert record is not None
    old = Data("string", legacy_hash(SECRET))
    legacy = tuple(v if v.index != admin.index else replace(v, data=old) for v in record.values)
    assert await store.put(handle.key, Record(record.handle, legacy), record.version)
    assert (await seckey()).startswith("scrypt$")

    registrar = Registrar(store, Homes(store, generations), invalidator, store.get)
    auth = Authenticator(store.get, reseal=registrar.reseal)
    user = f"{admin.index}%3A{admin.handle}"
    assert await auth.identify(basic(user, SECRET)) == admin
    resealed = await seckey()
    assert resealed.startswith("aesgcm$") and is_stored(resealed)
    assert open_secret(resealed) == SECRET.encode()
    # Still the same secret for Basic (a fresh authenticator: nothing remembered).
    assert await Authenticator(store.get).identify(basic(user, SECRET)) == admin
    assert not verify_secret("wrong", resealed)

    # Resealing again, or with a wrong secret, changes nothing.
    await registrar.reseal(admin, SECRET)
    await registrar.reseal(Ref(admin.handle, admin.index), "wrong")
    assert await seckey() == resealed
