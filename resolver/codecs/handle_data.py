"""Handle values and their data as the native protocol encodes them (RFC 3651 section 3).

A value: index (4), timestamp (4), ttlType (1: 0 relative, 1 absolute), ttl (4), permissions
(1), type and data (length-prefixed), references (count, then handle and index each).  The
data of structured formats is binary on the wire where REST has JSON: HS_ADMIN (2-byte rights,
handle, index), HS_VLIST (count, then handle and index each), HS_SITE (the site info record,
below) and public keys (``RSA_PUB_KEY``/``DSA_PUB_KEY``, reserved 2 bytes, big integers).

The site record (Handle.Net ``Encoder.encodeSiteInfoRecord``): format version (2), protocol
version (major, minor), serial (2), primary mask (0x80 primary, 0x40 multi-primary), hash
option (1), hash filter, attributes (count; name and value each), servers (count; id, 16-byte
address, public key, interfaces (count; type 1 admin | 2 query, protocol 0 UDP 1 TCP 2 HTTP
3 HTTPS, port)).  A host name that is no IP literal cannot be resolved in this pure codec:
its address is sent as zeros (idis writes addresses as IP literals).
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Mapping
from typing import Any

from resolver.codecs.handle_wire import Reader, string
from resolver.errors import ProtocolError
from resolver.values import AdminRef, Data, HandleValue, Ref

_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_VALUE_HEAD = struct.Struct(">IIBIB")

PROTOCOLS = {"UDP": 0, "TCP": 1, "HTTP": 2, "HTTPS": 3}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
ST_ADMIN = 1
ST_QUERY = 2
HASH_BY_ALL = 2
PRIMARY_SITE = 0x80
MULTI_PRIMARY = 0x40


# --- values --------------------------------------------------------------------------------


def encode_value(value: HandleValue) -> bytes:
    """One value in the protocol's encoding."""
    refs = b"".join(string(r.handle.encode()) + _UINT.pack(r.index) for r in value.references)
    return b"".join(
        (
            _VALUE_HEAD.pack(
                value.index,
                value.timestamp & 0xFFFFFFFF,
                1 if value.ttl_absolute else 0,
                value.ttl & 0xFFFFFFFF,
                value.permissions & 0x0F,
            ),
            string(value.type.encode()),
            string(encode_data(value.data)),
            _INT.pack(len(value.references)),
            refs,
        )
    )


def encode_data(data: Data) -> bytes:
    """The bytes of a value's data on the wire (see the module's docstring)."""
    payload = data.value
    if data.format == "string":
        return str(payload).encode()
    if data.format == "base64":
        return base64.b64decode(str(payload))
    if data.format == "admin":
        assert isinstance(payload, AdminRef)
        return (
            struct.pack(">H", payload.permissions & 0xFFFF)
            + string(payload.handle.encode())
            + _UINT.pack(payload.index)
        )
    if data.format == "vlist":
        refs = tuple(payload)
        return _INT.pack(len(refs)) + b"".join(
            string(r.handle.encode()) + _UINT.pack(r.index) for r in refs
        )
    if data.format == "site":
        return encode_site(payload) if isinstance(payload, Mapping) else b""
    if data.format == "key":
        return encode_public_key(payload) if isinstance(payload, Mapping) else b""
    return str(payload).encode()


def decode_value(reader: Reader) -> tuple[HandleValue, bytes]:
    """One value read from ``reader``: as a :class:`HandleValue` whose data is kept as base64
    (the wire does not say a data's format), and the raw data bytes."""
    index = reader.u32()
    timestamp = reader.u32()
    ttl_type = reader.byte()
    ttl = reader.u32()
    permissions = reader.byte()
    type_ = reader.blob(1024).decode("utf-8", "replace")
    data = reader.blob()
    refs = tuple(
        Ref(reader.blob(2048).decode("utf-8", "replace"), reader.u32())
        for _ in range(reader.count())
    )
    value = HandleValue(
        index,
        type_,
        Data("base64", base64.b64encode(data).decode("ascii")),
        ttl,
        ttl_type == 1,
        timestamp,
        permissions,
        refs,
    )
    return value, data


# --- site info -----------------------------------------------------------------------------


def _address(text: str) -> bytes:
    """16 bytes: IPv6 as is, IPv4 in the last four (as the reference fills it)."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return bytes(16)
    return address.packed.rjust(16, b"\x00")


def _address_text(raw: bytes) -> str:
    if raw[:12] == bytes(12):
        return str(ipaddress.IPv4Address(raw[12:]))
    if raw[:10] == bytes(10) and raw[10:12] == b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def _int_field(raw: Any, default: int, mask: int = 0xFFFFFFFF) -> int:
    """An integer field of a site given as JSON, cut to its width (a stored site is whatever
    a client wrote; it must still encode)."""
    try:
        return int(raw) & mask
    except (TypeError, ValueError, OverflowError):
        return default & mask


def encode_site(site: Mapping[str, Any]) -> bytes:
    """The binary site record of a site in Handle.Net's JSON form (what REST's ``site`` format
    holds): ``version``, ``protocolVersion`` ("2.10"), ``serialNumber``, ``primarySite``,
    ``multiPrimary``, ``hashOption``, ``hashFilter``, ``attributes``, ``servers``."""
    major, _, minor = str(site.get("protocolVersion") or "2.11").partition(".")
    mask = (PRIMARY_SITE if site.get("primarySite", True) else 0) | (
        MULTI_PRIMARY if site.get("multiPrimary") else 0
    )
    out = [
        struct.pack(
            ">HBBHBB",
            _int_field(site.get("version"), 1, 0xFFFF),
            _int_field(major, 2, 0xFF),
            _int_field(minor, 11, 0xFF),
            _int_field(site.get("serialNumber"), 1, 0xFFFF),
            mask,
            _int_field(site.get("hashOption"), HASH_BY_ALL, 0xFF),
        ),
        string(str(site.get("hashFilter") or "").encode()),
    ]
    attributes = _mappings(site.get("attributes"))
    out.append(_INT.pack(len(attributes)))
    for attribute in attributes:
        out.append(string(str(attribute.get("name", "")).encode()))
        out.append(string(str(attribute.get("value", "")).encode()))
    servers = _mappings(site.get("servers"))
    out.append(_INT.pack(len(servers)))
    for number, server in enumerate(servers, start=1):
        out.append(_UINT.pack(_int_field(server.get("serverId"), number)))
        out.append(_address(str(server.get("address") or "")))
        out.append(string(_server_key(server.get("publicKey"))))
        interfaces = _mappings(server.get("interfaces"))
        out.append(_INT.pack(len(interfaces)))
        for interface in interfaces:
            kind = (ST_QUERY if interface.get("query", True) else 0) | (
                ST_ADMIN if interface.get("admin", False) else 0
            )
            protocol = PROTOCOLS.get(str(interface.get("protocol", "")).upper(), 1)
            port = _int_field(interface.get("port"), 0)
            out.append(struct.pack(">BBI", kind, protocol, port))
    return b"".join(out)


def _mappings(raw: Any) -> list[Mapping[str, Any]]:
    return [item for item in raw if isinstance(item, Mapping)] if isinstance(raw, list) else []


def _server_key(raw: Any) -> bytes:
    if isinstance(raw, Mapping):
        if raw.get("format") == "key" and isinstance(raw.get("value"), Mapping):
            return encode_public_key(raw["value"])
        if raw.get("format") == "base64" and isinstance(raw.get("value"), str):
            try:
                return base64.b64decode(raw["value"])
            except ValueError:
                return b""
    return b""


def decode_site(data: bytes) -> dict[str, Any]:
    """A binary site record in Handle.Net's JSON form (the inverse of :func:`encode_site`;
    a server's key is given as base64).  Raises :class:`ProtocolError` if malformed."""
    reader = Reader(data, 0, len(data))
    version = int.from_bytes(reader.raw(2), "big")
    major, minor = reader.byte(), reader.byte()
    serial = int.from_bytes(reader.raw(2), "big")
    mask = reader.byte()
    hash_option = reader.byte()
    hash_filter = reader.blob()
    attributes = [
        {
            "name": reader.blob().decode("utf-8", "replace"),
            "value": reader.blob().decode("utf-8", "replace"),
        }
        for _ in range(reader.count())
    ]
    servers = []
    for _ in range(reader.count()):
        server_id = reader.i32()
        address = _address_text(reader.raw(16))
        key = reader.blob()
        interfaces = []
        for _ in range(reader.count()):
            kind, protocol = reader.byte(), reader.byte()
            interfaces.append(
                {
                    "query": bool(kind & ST_QUERY),
                    "admin": bool(kind & ST_ADMIN),
                    "protocol": PROTOCOL_NAMES.get(protocol, str(protocol)),
                    "port": reader.i32(),
                }
            )
        servers.append(
            {
                "serverId": server_id,
                "address": address,
                "publicKey": {"format": "base64", "value": base64.b64encode(key).decode()},
                "interfaces": interfaces,
            }
        )
    if reader.left:
        raise ProtocolError("unexpected bytes after the site record")
    site: dict[str, Any] = {
        "version": version,
        "protocolVersion": f"{major}.{minor}",
        "serialNumber": serial,
        "primarySite": bool(mask & PRIMARY_SITE),
        "multiPrimary": bool(mask & MULTI_PRIMARY),
    }
    if hash_option != HASH_BY_ALL:
        site["hashOption"] = hash_option
    if hash_filter:
        site["hashFilter"] = hash_filter.decode("utf-8", "replace")
    site["attributes"] = attributes
    site["servers"] = servers
    return site


# --- public keys ---------------------------------------------------------------------------


def _b64url_int(text: Any) -> int:
    raw = str(text)
    return int.from_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), "big")


def _java_bigint(number: int) -> bytes:
    """Two's complement, big-endian, shortest: Java's ``BigInteger.toByteArray``."""
    return number.to_bytes(number.bit_length() // 8 + 1, "big")


def encode_public_key(key: Mapping[str, Any]) -> bytes:
    """A public key in the JWK-like JSON Handle.Net writes (``{"kty":"RSA","n","e"}`` or
    ``{"kty":"DSA","y","p","q","g"}``, big integers base64url) as the protocol's key bytes.
    Anything else encodes as empty (no usable key)."""
    try:
        if key.get("kty") == "RSA":
            e, n = _b64url_int(key["e"]), _b64url_int(key["n"])
            # The reference sizes the buffer for four length fields and writes three: the last
            # four bytes stay zero, and readers expect them.
            return (
                string(b"RSA_PUB_KEY")
                + b"\x00\x00"
                + string(_java_bigint(e))
                + string(_java_bigint(n))
                + bytes(4)
            )
        if key.get("kty") == "DSA":
            parts = [_b64url_int(key[name]) for name in ("q", "p", "g", "y")]
            return (
                string(b"DSA_PUB_KEY")
                + b"\x00\x00"
                + b"".join(string(_java_bigint(p)) for p in parts)
            )
    except (KeyError, ValueError, TypeError):
        return b""
    return b""


def public_key_json(raw: bytes) -> dict[str, Any] | None:
    """The JSON form of an RSA key in the protocol's bytes, or None if it is not one."""
    try:
        reader = Reader(raw, 0, len(raw))
        if reader.blob(64) != b"RSA_PUB_KEY":
            return None
        reader.raw(2)
        e = int.from_bytes(reader.blob(), "big")
        n = int.from_bytes(reader.blob(), "big")
    except ProtocolError:
        return None

    def b64(number: int) -> str:
        size = max(1, (number.bit_length() + 7) // 8)
        return base64.urlsafe_b64encode(number.to_bytes(size, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "n": b64(n), "e": b64(e)}


def decode_values(body: bytes) -> tuple[str, list[tuple[HandleValue, bytes]]]:
    """A resolution response's or referral's body: the handle and its values (each with its
    raw data bytes).  Raises :class:`ProtocolError` if malformed."""
    reader = Reader(body, 0, len(body))
    handle = reader.blob(2048).decode("utf-8", "replace")
    values = [decode_value(reader) for _ in range(reader.count())] if reader.left else []
    if reader.left:
        raise ProtocolError("unexpected bytes after the values")
    return handle, values


def decode_error(body: bytes) -> str:
    reader = Reader(body, 0, len(body))
    return reader.blob().decode("utf-8", "replace") if reader.left >= 4 else ""
