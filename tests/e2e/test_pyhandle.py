"""pyhandle 1.5.0, unmodified, against a real ``idis serve`` on PostgreSQL and on the default.

pyhandle is the reference Python client of the Handle REST API; whatever it does must work.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from nodeproc import PREFIX, NodeProcess, basic_auth
from pyhandle.client.resthandleclient import RESTHandleClient
from pyhandle.handleexceptions import (
    GenericHandleError,
    HandleAlreadyExistsException,
    HandleAuthenticationError,
    HandleNotFoundException,
)

URL = "https://example.com/products/"


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def node(request: pytest.FixtureRequest, node_factory) -> Iterator[NodeProcess]:
    """One node per backend: PostgreSQL, and the embedded default (no database URL at all)."""
    url = request.getfixturevalue("pg_factory")() if request.param == "postgres" else None
    started = node_factory(database_url=url)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> RESTHandleClient:
    return RESTHandleClient.instantiate_with_username_and_password(
        node.base_url, node.identity, node.secret, HTTPS_verify=False
    )


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with node.client() as c:
        yield c


def fresh(name: str) -> str:
    return f"{PREFIX}/{name}-{uuid.uuid4().hex[:8]}"


def raw(http: httpx.Client, handle: str) -> dict:
    response = http.get(f"/api/handles/{handle}")
    assert response.status_code == 200, response.text
    return response.json()


def by_type(record: dict) -> dict[str, dict]:
    return {v["type"]: v for v in record["values"]}


def test_register_and_read(client: RESTHandleClient, http: httpx.Client) -> None:
    handle = fresh("reg")
    assert client.register_handle(handle, URL + "1", checksum="c1", EXTRA="e") == handle

    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert {k: record[k] for k in ("URL", "CHECKSUM", "EXTRA")} == {
        "URL": URL + "1",
        "CHECKSUM": "c1",
        "EXTRA": "e",
    }
    assert client.get_value_from_handle(handle, "URL") == URL + "1"
    assert client.get_value_from_handle(handle, "MISSING") is None
    assert client.retrieve_handle_record_json(handle)["handle"] == handle

    # What pyhandle sent (bare string data, an HS_ADMIN with the index as "200") is stored
    # in the canonical form.
    values = by_type(raw(http, handle))
    assert values["URL"]["index"] == 1
    assert values["URL"]["data"] == {"format": "string", "value": URL + "1"}
    assert values["HS_ADMIN"]["index"] == 100
    assert values["HS_ADMIN"]["data"] == {
        "format": "admin",
        "value": {"handle": f"0.NA/{PREFIX}", "index": 200, "permissions": "011111110011"},
    }


def test_modify_existing_and_add_new_key(client: RESTHandleClient, http: httpx.Client) -> None:
    handle = fresh("mod")
    client.register_handle(handle, URL + "old", EXTRA="e")
    assert client.modify_handle_value(handle, URL=URL + "new", NEW="n") == handle

    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert (record["URL"], record["EXTRA"], record["NEW"]) == (URL + "new", "e", "n")
    values = by_type(raw(http, handle))
    assert values["URL"]["index"] == 1  # modified in place, not appended


def test_add_value_that_exists_conflicts(client: RESTHandleClient) -> None:
    handle = fresh("add")
    client.register_handle(handle, URL, FOO="bar")
    assert client.add_handle_value(handle, BAZ="q") == handle
    with pytest.raises(GenericHandleError) as raised:
        client.add_handle_value(handle, FOO="other")
    assert raised.value.response.status_code == 409
    assert raised.value.response.json()["responseCode"] == 201
    assert client.get_value_from_handle(handle, "FOO") == "bar"
    assert client.get_value_from_handle(handle, "BAZ") == "q"


def test_delete_value(client: RESTHandleClient) -> None:
    handle = fresh("delval")
    client.register_handle(handle, URL, checksum="c", EXTRA="e")
    client.delete_handle_value(handle, "EXTRA")
    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert "EXTRA" not in record
    assert (record["URL"], record["CHECKSUM"]) == (URL, "c")
    client.delete_handle_value(handle, ["CHECKSUM", "NOT_THERE"])
    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert "CHECKSUM" not in record
    assert record["URL"] == URL


def test_delete_handle(client: RESTHandleClient, http: httpx.Client) -> None:
    handle = fresh("del")
    client.register_handle(handle, URL)
    client.delete_handle(handle)
    assert client.retrieve_handle_record_json(handle) is None
    assert client.retrieve_handle_record(handle) is None
    with pytest.raises(HandleNotFoundException):
        client.get_value_from_handle(handle, "URL")
    with pytest.raises(HandleNotFoundException):
        client.delete_handle(handle)
    with pytest.raises(HandleNotFoundException):
        client.modify_handle_value(handle, URL=URL)
    assert http.get(f"/api/handles/{handle}").status_code == 404


def test_generate_and_register(client: RESTHandleClient) -> None:
    handle = client.generate_and_register_handle(PREFIX, URL + "gen", checksum="g")
    prefix, _, suffix = handle.partition("/")
    assert prefix == PREFIX
    uuid.UUID(suffix)
    assert client.get_value_from_handle(handle, "URL") == URL + "gen"
    assert client.get_value_from_handle(handle, "CHECKSUM") == "g"


def test_register_existing(client: RESTHandleClient) -> None:
    handle = fresh("exists")
    client.register_handle(handle, URL + "first")
    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle(handle, URL + "second")
    assert client.get_value_from_handle(handle, "URL") == URL + "first"
    assert client.register_handle(handle, URL + "third", overwrite=True) == handle
    assert client.get_value_from_handle(handle, "URL") == URL + "third"


def test_register_json(client: RESTHandleClient) -> None:
    handle = fresh("json")
    entries = [
        {"index": 1, "type": "URL", "data": URL + "j"},
        {"index": 7, "type": "X", "data": "x"},
    ]
    assert client.register_handle_json(handle, entries) == handle
    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert (record["URL"], record["X"]) == (URL + "j", "x")


@pytest.mark.parametrize("suffix", ["übung-ä", "a/b/c", "with space", "MiXeD"])
def test_unusual_suffixes(client: RESTHandleClient, suffix: str) -> None:
    # pyhandle puts the handle into the path unquoted; requests percent-encodes what it must.
    handle = f"{PREFIX}/{suffix}-{uuid.uuid4().hex[:6]}"
    assert client.register_handle(handle, URL + "u") == handle
    assert client.retrieve_handle_record_json(handle)["handle"] == handle
    assert client.modify_handle_value(handle, URL=URL + "v") == handle
    assert client.get_value_from_handle(handle, "URL") == URL + "v"
    client.delete_handle(handle)
    assert client.retrieve_handle_record(handle) is None


def test_anonymous_writes_refused(node: NodeProcess, http: httpx.Client) -> None:
    handle = fresh("anon")
    # pyhandle itself refuses to send a write without credentials ...
    for anonymous in (
        RESTHandleClient(node.base_url),
        RESTHandleClient.instantiate_for_read_access(node.base_url),
    ):
        with pytest.raises(HandleAuthenticationError):
            anonymous.register_handle(handle, URL)
        with pytest.raises(HandleAuthenticationError):
            anonymous.delete_handle(f"{PREFIX}/ADMIN")
        assert anonymous.retrieve_handle_record_json(handle) is None
        assert anonymous.retrieve_handle_record_json(f"{PREFIX}/ADMIN")["handle"] == (
            f"{PREFIX}/ADMIN"
        )

    # ... and the server refuses the same PUT sent without them: 401 with code 402.
    body = {"values": [{"index": 1, "type": "URL", "data": URL}]}
    response = http.put(f"/api/handles/{handle}?overwrite=false", json=body)
    assert response.status_code == 401
    assert response.json()["responseCode"] == 402
    assert response.json()["handle"] == handle
    assert response.headers["www-authenticate"].lower().startswith("basic")
    response = http.delete(f"/api/handles/{PREFIX}/ADMIN")
    assert (response.status_code, response.json()["responseCode"]) == (401, 402)
    assert http.get(f"/api/handles/{handle}").status_code == 404


def test_wrong_secret(node: NodeProcess, client: RESTHandleClient) -> None:
    # The secret is not checked when the client is made, only when it writes.
    intruder = RESTHandleClient.instantiate_with_username_and_password(
        node.base_url, node.identity, node.secret + "-wrong", HTTPS_verify=False
    )
    handle = fresh("wrong")
    with pytest.raises(GenericHandleError) as raised:
        intruder.register_handle(handle, URL)
    assert raised.value.response.status_code == 403
    assert raised.value.response.json()["responseCode"] == 403
    assert client.retrieve_handle_record(handle) is None

    client.register_handle(handle, URL + "kept", EXTRA="e")
    with pytest.raises(GenericHandleError):
        intruder.modify_handle_value(handle, URL=URL + "changed")
    with pytest.raises(GenericHandleError):
        intruder.delete_handle_value(handle, "EXTRA")
    # delete_handle reads "handle" from the answer before its status: the 403 must name it.
    with pytest.raises(GenericHandleError) as raised:
        intruder.delete_handle(handle)
    assert raised.value.response.status_code == 403
    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert (record["URL"], record["EXTRA"]) == (URL + "kept", "e")


def test_stranger_lacking_rights(node: NodeProcess, client: RESTHandleClient) -> None:
    # A second identity, known to the server but named by no HS_ADMIN of the prefix.
    stranger = fresh("stranger")
    with httpx.Client(base_url=node.base_url) as http:
        response = http.put(
            f"/api/handles/{stranger}",
            json=[{"index": 300, "type": "HS_SECKEY", "data": "stranger-secret"}],
            auth=basic_auth(node.identity, node.secret),
        )
        assert response.status_code == 201, response.text
    other = RESTHandleClient.instantiate_with_username_and_password(
        node.base_url, f"300:{stranger}", "stranger-secret", HTTPS_verify=False
    )
    handle = fresh("guarded")
    with pytest.raises(GenericHandleError) as raised:
        other.register_handle(handle, URL)
    assert raised.value.response.status_code == 403
    assert raised.value.response.json()["responseCode"] == 401
    client.register_handle(handle, URL)
    with pytest.raises(GenericHandleError):
        other.delete_handle(handle)
    assert client.get_value_from_handle(handle, "URL") == URL


def test_unknown_user(node: NodeProcess) -> None:
    with pytest.raises(HandleNotFoundException):
        RESTHandleClient.instantiate_with_username_and_password(
            node.base_url, f"300:{PREFIX}/NOBODY", "x", HTTPS_verify=False
        )
