"""The DNS slow path: parse a query with dnspython, resolve it through the node, render.

Every query the hot path (:mod:`nodes.dns.wire`) cannot answer comes here.  Names map to
identifiers as :mod:`resolver.codecs.dns_names` says, data to records as
:mod:`resolver.codecs.dns_records` says, and the answer comes from ``node.resolve``: the same
chain, caches and write generations as REST.

=====================================  ===================================================
what the chain says                    DNS answer
=====================================  ===================================================
found                                  NAPTR, URI, TXT (ANY: all three), authoritative
not found (an identifier's name)       NXDOMAIN, the zone's SOA in authority
structure, prefix without a record     NOERROR, no data, SOA in authority (RFC 8020: names
(here or anywhere)                     below exist)
delegated prefix (302/303 referral,    a referral: NS at the prefix's name (the zone cut),
or a prefix record with HS_SITE        one per server of the site (``ns<serverId>.<cut>``
for a prefix not homed here)           with A/AAAA glue for an IP address, else the host)
an identifier not homed here           REFUSED (not authoritative for it)
store or upstream unavailable          SERVFAIL, not cached
the prefix's daily resolution quota    REFUSED, not cached (DNS has no code for a quota;
spent (603, registry/quotas.py)        REFUSED is a policy refusal)
outside the zone, class not IN,        REFUSED
zone transfer
malformed (dnspython cannot parse,     FORMERR with the query's ID; a message too short for
several questions)                     a header, or a response, is dropped
other opcodes, EDNS version > 0        NOTIMP, BADVERS
=====================================  ===================================================

The recursive role answers what its walk found, with RA set and AA clear, and never refers.
The apex has SOA and NS; ``ns.<zone>`` has A/AAAA with the address the server listens on (when
that is an address, not a wildcard).  UDP answers are at most the client's EDNS payload size
(512 without EDNS, at most :data:`nodes.dns.wire.MAX_UDP`); a larger one is sent empty with TC
set, and the client asks again over TCP.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from nodes.dns.wire import MAX_UDP, OPT, STATIC_KEY, TCP_LIMIT, QueryShape, refusal, shape
from resolver.answers import Answer, Outcome
from resolver.codecs import dns_records
from resolver.codecs.dns_names import NotAnIdentifier, place_of, prefix_labels
from resolver.errors import HandleError
from resolver.identifiers import PREFIX_HANDLE_PREFIX, prefix_handle
from resolver.sites import DERIVED_SITE_TYPES
from resolver.values import HS_SITE, Record

log = logging.getLogger(__name__)

STATIC_TTL = 3600
_IN = dns.rdataclass.IN
_DATA_TYPES = (dns.rdatatype.NAPTR, dns.rdatatype.URI, dns.rdatatype.TXT)
_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
_WIRE_TYPES = frozenset(int(t) for t in (*_DATA_TYPES, dns.rdatatype.ANY))


def _labels(data: bytes, end: int) -> list[str] | None:
    """The labels of the plain name at 12 (``shape`` checked it), lower-cased; None if one is
    not ASCII."""
    labels = []
    at = 12
    while at < end - 1:
        length = data[at]
        try:
            labels.append(data[at + 1 : at + 1 + length].decode("ascii").lower())
        except UnicodeDecodeError:
            return None
        at += length + 1
    return labels


@dataclass(frozen=True, slots=True)
class Reply:
    """A rendered answer, or None to send nothing; ``expires`` None means not to keep it."""

    wire: bytes | None
    expires: float | None = None
    key: str = STATIC_KEY
    generation: int = 0


DROP = Reply(None)


def header_error(data: bytes, rcode: dns.rcode.Rcode) -> Reply:
    """An answer with only a header, for a query too broken to parse (or dropped: a response,
    or less than a header)."""
    if len(data) < 12 or data[2] & 0x80:
        return DROP
    flags = 0x8000 | (data[2] & 0x79) << 8 | rcode  # QR, the query's opcode and RD
    return Reply(data[:2] + flags.to_bytes(2, "big") + bytes(8))


def _rrset(
    name: dns.name.Name, ttl: int, rdtype: dns.rdatatype.RdataType, texts: list[str]
) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, ttl, _IN, rdtype, texts)


class Answerer:
    """Answers DNS queries for ``zone`` from ``node`` (a :class:`nodes.bootstrap.Node`)."""

    def __init__(self, node: Any, zone: str, listen_host: str) -> None:
        self._node = node
        self._zone = dns.name.from_text(zone)
        self._zone_labels = [label.decode("ascii").lower() for label in self._zone.labels[:-1]]
        self._recursive = node.settings.role == "recursive"
        negative = int(node.settings.cache.negative_ttl)
        self._negative_ttl = negative
        self._max_ttl = int(node.settings.cache.max_ttl)
        ns = dns.name.from_text("ns", self._zone)
        host = dns.name.from_text("hostmaster", self._zone)
        self._soa = _rrset(
            self._zone, negative, dns.rdatatype.SOA, [f"{ns} {host} 1 3600 600 86400 {negative}"]
        )
        self._ns = _rrset(self._zone, STATIC_TTL, dns.rdatatype.NS, [ns.to_text()])
        self._ns_name = ns
        self._glue = [rrset for rrset in [_address_rrset(ns, listen_host)] if rrset is not None]
        quotas = node.quotas
        limited = quotas is not None and quotas.limits.resolutions_per_prefix
        self.quotas = quotas if limited else None
        """The node's quotas when they limit what DNS can count: resolutions per prefix."""

    async def reply(self, data: bytes, tcp: bool) -> Reply:
        """The answer to the query ``data`` (never raises for any input)."""
        shaped = shape(data, tcp)
        counted = None
        if shaped is not None:
            try:
                found = await self._found(data, shaped)
            except Exception:
                log.exception("answering a DNS query failed")
                return header_error(data, dns.rcode.SERVFAIL)
            if isinstance(found, Reply):
                return found
            counted = found
        if len(data) >= 12 and data[2] & 0x78:  # not a QUERY: not parsed any further
            return header_error(data, dns.rcode.NOTIMP)
        try:
            query = dns.message.from_wire(data)
        except Exception:  # dnspython's many parse errors: all mean a malformed query
            return header_error(data, dns.rcode.FORMERR)
        if query.flags & dns.flags.QR:
            return DROP
        try:
            return await self._reply(query, tcp, counted)
        except Exception:
            log.exception("answering a DNS query failed")
            return header_error(data, dns.rcode.SERVFAIL)

    async def _reply(self, query: dns.message.Message, tcp: bool, counted: str | None) -> Reply:
        """The general path; ``counted``: the key the quotas counted already (by _found)."""
        response = dns.message.make_response(
            query, recursion_available=self._recursive, our_payload=MAX_UDP
        )
        if len(query.question) != 1:
            return self._render(response, dns.rcode.FORMERR, tcp, query)
        if query.edns > 0:
            return self._render(response, dns.rcode.BADVERS, tcp, query)
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        if question.rdclass != _IN or rdtype in _TRANSFERS or not name.is_subdomain(self._zone):
            return self._render(response, dns.rcode.REFUSED, tcp, query, expires=STATIC_TTL)
        try:
            labels = [label.decode("ascii").lower() for label in name.relativize(self._zone).labels]
            place = place_of(labels)
        except (UnicodeDecodeError, NotAnIdentifier):
            return self._negative(response, dns.rcode.NXDOMAIN, tcp, query, None)
        if not labels:
            return self._apex(response, rdtype, tcp, query)
        if name == self._ns_name and rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            response.answer.extend(r for r in self._glue if r.rdtype == rdtype)
            response.flags |= dns.flags.AA
            return self._render(response, dns.rcode.NOERROR, tcp, query, expires=STATIC_TTL)
        key = place.key
        if key is None and (self._recursive or not place.prefix):
            return self._negative(response, dns.rcode.NOERROR, tcp, query, None)
        if key is None:
            key = prefix_handle(place.prefix)  # who answers below a prefix: its record says
        if key != counted and self.quotas is not None and not self.quotas.admit(key):
            return self._render(response, dns.rcode.REFUSED, tcp, query)  # 603: not kept
        generations = self._node.generations
        generation = generations.current(key)  # noted before the read: see Generations
        try:
            answer: Answer = await self._node.resolve(key, False)
        except HandleError as error:
            log.info("DNS query for %s: %s", key, error.message)
            return self._render(response, dns.rcode.SERVFAIL, tcp, query)
        noted = (answer, generation)
        cut = None if self._recursive else await self._cut(answer)
        if cut is not None:
            return self._referral(response, cut, tcp, query, noted)
        if place.key is None or (
            answer.outcome in (Outcome.NOT_FOUND, Outcome.NOT_HOMED)
            and key.startswith(PREFIX_HANDLE_PREFIX + "/")
        ):
            return self._negative(response, dns.rcode.NOERROR, tcp, query, noted)
        if answer.outcome is Outcome.NOT_FOUND:
            return self._negative(response, dns.rcode.NXDOMAIN, tcp, query, noted)
        if answer.outcome is not Outcome.FOUND or answer.record is None:
            return self._render(response, dns.rcode.REFUSED, tcp, query, noted=noted)
        ttl = max(0, min(self._max_ttl, int(answer.expires - time.time())))
        response.answer.extend(_data(name, rdtype, ttl, answer.record))
        if not response.answer:
            response.authority.append(self._soa)
        if not self._recursive:
            response.flags |= dns.flags.AA
        return self._render(response, dns.rcode.NOERROR, tcp, query, noted=noted)

    async def _found(self, data: bytes, query: QueryShape) -> Reply | str | None:
        """The answer to a plain query for data of an identifier that is found, rendered by
        hand (a fifth of dnspython's cost; the common uncached query), or REFUSED past the
        daily resolution quota; else None for the general path (any other question, name or
        outcome, or an answer that must be cut), or the identifier's key when it was counted
        against the quotas already."""
        end = query.question_end
        rdtype = int.from_bytes(data[end - 4 : end - 2], "big")
        if data[end - 2 : end] != b"\x00\x01" or rdtype not in _WIRE_TYPES:
            return None
        labels = _labels(data, end - 4)
        zone = self._zone_labels
        if labels is None or len(labels) <= len(zone) or labels[-len(zone) :] != zone:
            return None
        try:
            place = place_of(labels[: -len(zone)])
        except NotAnIdentifier:
            return None
        key = place.key
        if key is None or key.startswith(PREFIX_HANDLE_PREFIX + "/"):
            return None
        if self.quotas is not None and not self.quotas.admit(key):
            return Reply(refusal(data, query, recursive=self._recursive))
        generation = self._node.generations.current(key)
        try:
            answer: Answer = await self._node.resolve(key, False)
        except HandleError:
            return key  # the general path answers SERVFAIL
        if answer.outcome is not Outcome.FOUND or answer.record is None:
            return key
        ttl = max(0, min(self._max_ttl, int(answer.expires - time.time()))).to_bytes(4, "big")
        records = []
        for wanted in _DATA_TYPES if rdtype == dns.rdatatype.ANY else (rdtype,):
            head = b"\xc0\x0c" + int(wanted).to_bytes(2, "big") + b"\x00\x01" + ttl
            for rdata in dns_records.wire_rdatas(answer.record.values, wanted):
                records.append(head + len(rdata).to_bytes(2, "big") + rdata)
        if not records:
            return key
        edns = data[10:12] == b"\x00\x01"
        flags = 0x8000 | (data[2] & 0x01) << 8  # QR, RD as asked
        flags |= 0x0080 if self._recursive else 0x0400  # RA or AA
        counts = b"\x00\x01" + len(records).to_bytes(2, "big") + b"\x00\x00"
        counts += b"\x00\x01" if edns else b"\x00\x00"
        wire = b"".join((data[:2], flags.to_bytes(2, "big"), counts, data[12:end], *records))
        if edns:
            wire += OPT
        if len(wire) > query.limit:
            return key  # the general path truncates
        return Reply(wire, answer.expires, key, generation)

    def _apex(
        self,
        response: dns.message.Message,
        rdtype: dns.rdatatype.RdataType,
        tcp: bool,
        query: dns.message.Message,
    ) -> Reply:
        if rdtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            response.answer.append(self._soa)
        if rdtype in (dns.rdatatype.NS, dns.rdatatype.ANY):
            response.answer.append(self._ns)
            response.additional.extend(self._glue)
        if not response.answer:
            response.authority.append(self._soa)
        response.flags |= dns.flags.AA
        return self._render(response, dns.rcode.NOERROR, tcp, query, expires=STATIC_TTL)

    def _negative(
        self,
        response: dns.message.Message,
        rcode: dns.rcode.Rcode,
        tcp: bool,
        query: dns.message.Message,
        noted: tuple[Answer, int] | None,
    ) -> Reply:
        response.authority.append(self._soa)
        if not self._recursive:
            response.flags |= dns.flags.AA
        expires = None if noted else self._negative_ttl
        return self._render(response, rcode, tcp, query, noted=noted, expires=expires)

    async def _cut(self, answer: Answer) -> tuple[str, list[Any]] | None:
        """The delegated prefix an answer shows, and the site values that serve it, if any.

        A referral names the prefix record that delegates; a prefix record found here but for
        a prefix not homed here delegates by its own HS_SITE (DNS: the parent holds the NS
        records of a cut, the child the data at and below it)."""
        record = answer.record
        if record is None:
            return None
        holder = record.handle.partition("/")[2]
        if answer.outcome.is_referral:
            wanted = (HS_SITE,) if answer.outcome is Outcome.SERVICE_REFERRAL else None
            sites = [v for v in record.values if v.type.upper() in (wanted or DERIVED_SITE_TYPES)]
            return holder, sites
        if answer.outcome is not Outcome.FOUND or not answer.key.startswith(
            PREFIX_HANDLE_PREFIX + "/"
        ):
            return None
        if holder.upper() in await self._node.homes.keys():
            return None
        sites = [v for v in record.values if v.type.upper() == HS_SITE]
        return (holder, sites) if sites else None

    def _referral(
        self,
        response: dns.message.Message,
        cut: tuple[str, list[Any]],
        tcp: bool,
        query: dns.message.Message,
        noted: tuple[Answer, int],
    ) -> Reply:
        prefix, sites = cut
        cut_name = dns.name.from_text(".".join(prefix_labels(prefix)), self._zone)
        answer = noted[0]
        ttl = max(0, min(self._max_ttl, int(answer.expires - time.time())))
        targets: list[str] = []
        for value in sites:
            for server in _servers(value.data.value):
                target, glue = _server_name(server, cut_name, ttl)
                if target.to_text() not in targets:
                    targets.append(target.to_text())
                    if glue is not None:
                        response.additional.append(glue)
        if not targets:
            return self._render(response, dns.rcode.SERVFAIL, tcp, query)
        response.authority.append(_rrset(cut_name, ttl, dns.rdatatype.NS, targets))
        return self._render(response, dns.rcode.NOERROR, tcp, query, noted=noted)

    def _render(
        self,
        response: dns.message.Message,
        rcode: dns.rcode.Rcode,
        tcp: bool,
        query: dns.message.Message,
        *,
        noted: tuple[Answer, int] | None = None,
        expires: float | None = None,
    ) -> Reply:
        response.set_rcode(rcode)
        limit = TCP_LIMIT if tcp else 512
        if not tcp and query.edns >= 0:
            limit = min(max(query.payload, 512), MAX_UDP)
        try:
            wire = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            wire = response.to_wire(max_size=limit)
        if noted is not None:
            answer, generation = noted
            return Reply(wire, answer.expires, answer.key, generation)
        if expires is not None:
            return Reply(wire, time.time() + expires)
        return Reply(wire)


def _data(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, ttl: int, record: Record
) -> list[dns.rrset.RRset]:
    wanted = _DATA_TYPES if rdtype == dns.rdatatype.ANY else (rdtype,)
    values = record.values
    rrsets = []
    if dns.rdatatype.NAPTR in wanted:
        naptrs = dns_records.naptr_records(values)
        if naptrs:
            rrsets.append(_rrset(name, ttl, dns.rdatatype.NAPTR, [_naptr_text(n) for n in naptrs]))
    if dns.rdatatype.URI in wanted:
        uris = dns_records.uri_records(values)
        if uris:
            texts = [f'{u.priority} {u.weight} "{_quoted(u.target.encode())}"' for u in uris]
            rrsets.append(_rrset(name, ttl, dns.rdatatype.URI, texts))
    if dns.rdatatype.TXT in wanted:
        txts = dns_records.txt_records(values)
        if txts:
            texts = [" ".join(f'"{_quoted(s)}"' for s in strings) for strings in txts]
            rrsets.append(_rrset(name, ttl, dns.rdatatype.TXT, texts))
    return rrsets


def _quoted(raw: bytes) -> str:
    """``raw`` as the inside of a quoted DNS character-string in presentation format."""
    out = []
    for byte in raw:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def _naptr_text(naptr: dns_records.Naptr) -> str:
    fields = (naptr.flags, naptr.service, naptr.regexp)
    quoted = " ".join(f'"{_quoted(f.encode())}"' for f in fields)
    return f"{naptr.order} {naptr.preference} {quoted} {naptr.replacement}"


def _servers(site: Any) -> list[dict[str, Any]]:
    if not isinstance(site, dict):
        return []
    return [s for s in site.get("servers") or () if isinstance(s, dict) and s.get("address")]


def _server_name(
    server: dict[str, Any], cut: dns.name.Name, ttl: int
) -> tuple[dns.name.Name, dns.rrset.RRset | None]:
    """The NS target naming one server of a site, and its glue when its address is an IP."""
    address = str(server["address"])
    number = server.get("serverId", 1)
    target = dns.name.from_text(f"ns{int(number) if isinstance(number, int) else 1}", cut)
    glue = _address_rrset(target, address, ttl)
    if glue is None:
        return dns.name.from_text(address), None
    return target, glue


def _address_rrset(
    name: dns.name.Name, address: str, ttl: int = STATIC_TTL
) -> dns.rrset.RRset | None:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    if ip.is_unspecified:
        return None
    rdtype = dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA
    return _rrset(name, ttl, rdtype, [str(ip)])
