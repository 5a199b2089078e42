"""HTTP Basic authentication against HS_SECKEY values, and the secret hashing it relies on."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from registry import secrets
from registry.authentication import Authenticator, parse_identity
from registry.secrets import (
    generate_secret,
    is_stored,
    legacy_hash,
    open_secret,
    seal_secret,
    verify_secret,
)
from resolver.errors import AuthenticationFailed
from resolver.identifiers import fold
from resolver.values import SECRET_PERMISSIONS, Data, HandleValue, Record, Ref

SECRET = "pa:ss:word"


@pytest.fixture(scope="module")
def hashed() -> str:
    return seal_secret(SECRET)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def key(self, handle: str, *keys: tuple[int, str]) -> None:
        values = tuple(
            HandleValue(i, "HS_SECKEY", Data("string", h), permissions=SECRET_PERMISSIONS)
            for i, h in keys
        )
        self.records[fold(handle)] = Record(handle, values)

    async def fetch(self, key: str) -> Record | None:
        return self.records.get(key)


@pytest.fixture
def store(hashed: str) -> Store:
    store = Store()
    store.key("88.100.1/ADMIN", (300, hashed))
    return store


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def failed(auth: Authenticator, header: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        await auth.identify(header)
    return caught.value


# --- parse_identity ----------------------------------------------------------------------


def test_identity_with_index() -> None:
    assert parse_identity("300:88.100.1/ADMIN") == Ref("88.100.1/ADMIN", 300)


def test_identity_without_index_means_index_zero() -> None:
    assert parse_identity("88.100.1/ADMIN") == Ref("88.100.1/ADMIN", 0)


def test_identity_whose_suffix_holds_a_colon() -> None:
    assert parse_identity("88.100.1/a:b") == Ref("88.100.1/a:b", 0)
    assert parse_identity("300:88.100.1/a:b") == Ref("88.100.1/a:b", 300)


# --- identify --------------------------------------------------------------------------------


async def test_no_header_is_anonymous(store: Store) -> None:
    auth = Authenticator(store.fetch)
    assert await auth.identify(None) is None
    assert await auth.identify("") is None


async def test_percent_encoded_identity_and_secret_with_colons(store: Store) -> None:
    auth = Authenticator(store.fetch)
    identity = await auth.identify(basic("300%3A88.100.1/ADMIN", SECRET))
    assert identity == Ref("88.100.1/ADMIN", 300)


async def test_identity_must_be_percent_encoded(store: Store) -> None:
    # Only the first colon splits user from secret, so a raw "300:" would be misread; the
    # identity must be percent-encoded, as pyhandle does.
    auth = Authenticator(store.fetch)
    await failed(auth, basic("300:88.100.1/ADMIN", SECRET))


async def test_identity_is_matched_case_insensitively(store: Store) -> None:
    auth = Authenticator(store.fetch)
    assert await auth.identify(basic("300%3A88.100.1/admin", SECRET)) == Ref("88.100.1/admin", 300)


async def test_scheme_is_case_insensitive(store: Store) -> None:
    auth = Authenticator(store.fetch)
    header = basic("300%3A88.100.1/ADMIN", SECRET).replace("Basic", "basic")
    assert await auth.identify(header) == Ref("88.100.1/ADMIN", 300)


async def test_identity_without_index_is_the_key_that_matched(store: Store, hashed: str) -> None:
    store.key("88.100.1/ADMIN", (300, seal_secret("other")), (301, hashed))
    auth = Authenticator(store.fetch)
    assert await auth.identify(basic("88.100.1/ADMIN", SECRET)) == Ref("88.100.1/ADMIN", 301)


async def test_wrong_secret_fails_with_403(store: Store) -> None:
    error = await failed(Authenticator(store.fetch), basic("300%3A88.100.1/ADMIN", "wrong"))
    assert error.code == 403


async def test_secret_of_another_index_does_not_match(store: Store) -> None:
    await failed(Authenticator(store.fetch), basic("301%3A88.100.1/ADMIN", SECRET))


async def test_unknown_identity_fails(store: Store) -> None:
    await failed(Authenticator(store.fetch), basic("300%3A88.100.9/ADMIN", SECRET))


async def test_non_secret_key_values_are_not_credentials(hashed: str) -> None:
    store = Store()
    store.records[fold("88.100.1/ADMIN")] = Record(
        "88.100.1/ADMIN", (HandleValue(300, "URL", Data("string", hashed)),)
    )
    await failed(Authenticator(store.fetch), basic("300%3A88.100.1/ADMIN", SECRET))


async def test_plaintext_stored_secret_never_verifies() -> None:
    store = Store()
    store.key("88.100.1/ADMIN", (300, SECRET))
    await failed(Authenticator(store.fetch), basic("300%3A88.100.1/ADMIN", SECRET))


@pytest.mark.parametrize(
    "header",
    [
        'Handle clientCert="true"',
        "Bearer abc",
        "Basic",
        "Basic %%%",
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Basic é",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":secret").decode(),
        "Basic " + base64.b64encode(b"300%3Anoslash:secret").decode(),
    ],
)
async def test_malformed_or_unsupported_headers_fail(store: Store, header: str) -> None:
    error = await failed(Authenticator(store.fetch), header)
    assert error.code == 403


# --- memo of successful checks -----------------------------------------------------------


async def test_a_successful_check_is_remembered(store: Store, verifications: list[str]) -> None:
    auth = Authenticator(store.fetch)
    header = basic("300%3A88.100.1/ADMIN", SECRET)
    await auth.identify(header)
    await auth.identify(header)
    assert verifications == [SECRET]


async def test_failures_are_not_remembered(store: Store, verifications: list[str]) -> None:
    auth = Authenticator(store.fetch)
    for _ in range(2):
        await failed(auth, basic("300%3A88.100.1/ADMIN", "wrong"))
    assert verifications == ["wrong", "wrong"]


async def test_remembered_success_does_not_admit_another_secret(
    store: Store, verifications: list[str]
) -> None:
    auth = Authenticator(store.fetch)
    await auth.identify(basic("300%3A88.100.1/ADMIN", SECRET))
    await failed(auth, basic("300%3A88.100.1/ADMIN", "wrong"))


async def test_memo_is_dropped_when_the_stored_hash_changes(
    store: Store, verifications: list[str]
) -> None:
    auth = Authenticator(store.fetch)
    header = basic("300%3A88.100.1/ADMIN", SECRET)
    await auth.identify(header)
    store.key("88.100.1/ADMIN", (300, seal_secret("rotated")))
    await failed(auth, header)
    assert verifications == [SECRET, SECRET]
    assert await auth.identify(basic("300%3A88.100.1/ADMIN", "rotated"))


async def test_memo_expires(store: Store, verifications: list[str]) -> None:
    clock = Clock()
    auth = Authenticator(store.fetch, remember_seconds=10, clock=clock)
    header = basic("300%3A88.100.1/ADMIN", SECRET)
    await auth.identify(header)
    clock.now = 10
    await auth.identify(header)
    assert len(verifications) == 2


async def test_memo_is_bounded(store: Store, hashed: str, verifications: list[str]) -> None:
    store.key("88.100.1/OTHER", (300, hashed))
    auth = Authenticator(store.fetch, max_remembered=1)
    first = basic("300%3A88.100.1/ADMIN", SECRET)
    await auth.identify(first)
    await auth.identify(basic("300%3A88.100.1/OTHER", SECRET))
    await auth.identify(first)
    assert len(verifications) == 3


# --- secrets ---------------------------------------------------------------------------------


def test_hash_verifies_its_secret_only(hashed: str) -> None:
    assert verify_secret(SECRET, hashed)
    assert not verify_secret(SECRET + "x", hashed)
    assert not verify_secret("", hashed)


def test_hashes_are_salted(hashed: str) -> None:
    again = seal_secret(SECRET)
    assert again != hashed
    assert verify_secret(SECRET, again)


def test_hash_does_not_contain_the_secret(hashed: str) -> None:
    assert SECRET not in hashed
    assert hashed.startswith("aesgcm$")


def test_is_hashed(hashed: str) -> None:
    assert is_stored(hashed)
    assert not is_stored(SECRET)
    assert not is_stored("scrypt$1$2")
    assert not is_stored("")


@pytest.mark.parametrize(
    "stored",
    ["plain", "scrypt$x$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!$AAAA", "scrypt$3$8$1$AAAA$AAAA"],
)
def test_verify_rejects_malformed_hashes_without_raising(stored: str) -> None:
    assert not verify_secret(SECRET, stored)


def test_unicode_secret() -> None:
    stored = seal_secret("密码-ß")
    assert verify_secret("密码-ß", stored)
    assert not verify_secret("密码-SS", stored)


def test_a_secret_sealed_under_another_key_or_tampered_with_does_not_open(hashed: str) -> None:
    scheme, kid, blob = hashed.split("$")
    assert open_secret(hashed) == SECRET.encode()
    assert not verify_secret(SECRET, f"{scheme}${'0' * len(kid)}${blob}")
    flipped = base64.b64encode(bytes([base64.b64decode(blob)[-1] ^ 1])).decode()
    tampered = base64.b64encode(base64.b64decode(blob)[:-1] + base64.b64decode(flipped)).decode()
    assert open_secret(f"{scheme}${kid}${tampered}") is None


def test_keys_loaded_before_still_open_their_values(tmp_path: Path, secret_key: bytes) -> None:
    first = seal_secret(SECRET)
    try:
        secrets.use_key_file(tmp_path / "secret.key")
        assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
        second = seal_secret(SECRET)
        assert first.split("$")[1] != second.split("$")[1]
        assert verify_secret(SECRET, first) and verify_secret(SECRET, second)
        # The same file gives the same key: a restarted node opens what it sealed.
        assert secrets.use_key_file(tmp_path / "secret.key") == second.split("$")[1]
    finally:
        secrets.use_key(secret_key)


async def test_a_legacy_scrypt_hash_verifies_and_is_resealed_on_login() -> None:
    store = Store()
    store.key("88.100.1/ADMIN", (300, legacy_hash(SECRET)))
    resealed: list[tuple[Ref, str]] = []

    async def reseal(identity: Ref, secret: str) -> None:
        resealed.append((identity, secret))

    auth = Authenticator(store.fetch, reseal=reseal)
    with pytest.raises(AuthenticationFailed):
        await auth.identify(basic("300%3A88.100.1/ADMIN", "wrong"))
    assert resealed == []
    assert await auth.identify(basic("300%3A88.100.1/ADMIN", SECRET)) == Ref("88.100.1/ADMIN", 300)
    assert resealed == [(Ref("88.100.1/ADMIN", 300), SECRET)]


def test_generated_secrets_are_distinct_and_long() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b
    assert len(a) >= 24
