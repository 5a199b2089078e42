"""Synthetic identifiers in the shapes IDIS nodes hold, generated from an index alone.

A :class:`Population` turns an integer ``i`` into one identifier and its values, the same every
time (no state, no file), so that ``idis loadtest register`` can register identifiers 0..N-1,
``idis loadtest resolve`` can later ask for any of them (or for ones that were never
registered), and ``idis bench`` can bulk-load the very same records.

The shapes follow what the national system holds:

- enterprise prefixes under industry prefixes ``88.1xx`` (``88.100.1``, ``88.118.530``), the
  enterprises of very different sizes (a Zipf-like share of the identifiers each);
- suffixes of the lengths seen in practice, 8 to about 40 characters: serial numbers with a
  date (``SN20240315…``), GS1-style GTIN + serial strings, model/batch/serial paths with
  slashes, hex tokens, VIN-like codes, short internal codes and EPC URNs;
- 3 to 8 values: the URL (index 1), the IDIS template reference (index 1001) and 1 to 6 product
  attributes at 2000+ (product name, often in Chinese, batch, production date, manufacturer,
  origin, model, spec).  The node adds the default HS_ADMIN on creation.

Uniqueness: every suffix ends with a 7-character base-36 code that is a bijection of ``i``
(:func:`code`), so two indexes never give the same identifier, case folded or not.  Indexes
from :data:`UNKNOWN_BASE` up are reserved for identifiers that are never registered
(:meth:`Population.unknown`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

_M64 = (1 << 64) - 1
_CODE_SPACE = 36**7
_CODE_MUL = 2_654_435_761
"""Odd and not a multiple of 3, so coprime with 36**7: ``i * _CODE_MUL`` is a bijection."""
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HEX = "0123456789abcdef"

UNKNOWN_BASE = 1 << 36
"""Indexes from here on name identifiers no run ever registers (``i`` must stay below it)."""

DEFAULT_PREFIXES: tuple[str, ...] = (
    "88.100.1",
    "88.101.27",
    "88.102.1008",
    "88.105.66",
    "88.108.3",
    "88.116.2",
    "88.118.530",
    "88.123.9",
)
"""Eight enterprises under six industry nodes, the largest first."""

_PRODUCTS = (
    "智能电表 DDZY-71",
    "Hydraulic pump HP-200",
    "锂电池模组 LFP-280Ah",
    "Servo motor SM-4",
    "工业网关 IG-502",
    "Ball valve DN50",
    "变频器 VFD-7.5kW",
    "Bearing 6205-2RS",
)
_ORIGINS = ("CN-GD-Shenzhen", "CN-JS-Suzhou", "CN-ZJ-Ningbo", "CN-SH-Minhang", "CN-HB-Wuhan")
_TEMPLATES = ("product", "part", "batch", "device")


def mix(x: int) -> int:
    """splitmix64's finaliser: 64 well-spread bits from any integer (the generator's hash)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def code(i: int) -> str:
    """The 7-character base-36 code of ``i`` (0 <= i < 36**7): distinct for distinct ``i``."""
    n = (i * _CODE_MUL + 12_345) % _CODE_SPACE
    out = []
    for _ in range(7):
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(out)


def _alnum(h: int, k: int) -> str:
    out = []
    for _ in range(k):
        h, r = divmod(h, 36)
        out.append(_B36[r])
    return "".join(out)


def _hex(h: int, k: int) -> str:
    out = []
    for _ in range(k):
        out.append(_HEX[h & 15])
        h >>= 4
    return "".join(out)


def _date(h: int) -> str:
    return f"{2019 + h % 7}{1 + (h >> 3) % 12:02d}{1 + (h >> 7) % 28:02d}"


def _serial(h: int, c: str) -> str:
    return f"SN{_date(h)}{c}"  # 17


def _gs1(h: int, c: str) -> str:
    gtin = f"{h % 10**14:014d}"
    return f"01{gtin}21{c}{_alnum(h >> 50, (h >> 47) % 6)}"  # 25-30


def _path(h: int, c: str) -> str:
    return f"M{(h % 900) + 100}-{_alnum(h >> 10, 2)}/B{_date(h >> 20)}/{c}"  # 26


def _token(h: int, c: str) -> str:
    return _hex(h, 16) + _hex(mix(h), 9) + c  # 32


def _vin(h: int, c: str) -> str:
    return "L" + _alnum(h, 9) + c  # 17


def _short(h: int, c: str) -> str:
    return _alnum(h, 1 + h % 3) + c  # 8-10


def _epc(h: int, c: str) -> str:
    return f"urn:epc:id:sgtin:{h % 10**7:07d}.{(h >> 24) % 10**6:06d}.{c}"  # 39


# (family, weight): serial numbers and GS1 strings dominate product coding in practice.
_FAMILIES = (
    (_serial, 30),
    (_gs1, 25),
    (_path, 15),
    (_token, 10),
    (_vin, 8),
    (_short, 7),
    (_epc, 5),
)
_FAMILY_TABLE = tuple(f for f, w in _FAMILIES for _ in range(w))


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    out, run = [], 0.0
    for w in weights:
        run += w / total
        out.append(run)
    out[-1] = 1.0
    return out


@dataclass(frozen=True)
class Population:
    """Identifiers ``i`` = 0, 1, 2, ... under ``prefixes``, deterministic for a ``seed``.

    ``prefix_skew`` shapes the enterprises' sizes: prefix number ``k`` holds a share of the
    identifiers proportional to ``1 / (k + 1) ** prefix_skew`` (0 spreads them evenly).
    """

    prefixes: tuple[str, ...] = DEFAULT_PREFIXES
    seed: int = 1
    prefix_skew: float = 0.8
    _cum: list[float] = field(init=False, repr=False, compare=False)
    _seedmix: int = field(init=False, repr=False, compare=False)
    _domains: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.prefixes:
            raise ValueError("a population needs at least one prefix")
        weights = [1.0 / (k + 1) ** self.prefix_skew for k in range(len(self.prefixes))]
        object.__setattr__(self, "_cum", _cumulative(weights))
        object.__setattr__(self, "_seedmix", mix(self.seed * 0x632BE59BD9B4E019))
        # Not hash(): str hashes change from one process to the next.
        domains = {
            p: f"trace.e{int.from_bytes(p.encode()[-8:].rjust(8, b'0'), 'big') % 99991:05d}.cn"
            for p in self.prefixes
        }
        object.__setattr__(self, "_domains", domains)

    def _hash(self, i: int) -> int:
        return mix(i ^ self._seedmix)

    def prefix_of(self, i: int) -> str:
        """The enterprise prefix identifier ``i`` lives under."""
        u = (self._hash(i) >> 11) / float(1 << 53)
        return self.prefixes[bisect.bisect_right(self._cum, u)]

    def suffix(self, i: int) -> str:
        """The suffix of identifier ``i`` (its last 7 characters are :func:`code` of ``i``)."""
        h = mix(self._hash(i))
        family = _FAMILY_TABLE[h % len(_FAMILY_TABLE)]
        return family(h >> 7, code(i))

    def handle(self, i: int) -> str:
        """The identifier ``i``: ``prefix/suffix``."""
        return f"{self.prefix_of(i)}/{self.suffix(i)}"

    def unknown(self, k: int) -> str:
        """The ``k``-th identifier that is never registered: same prefixes and shapes."""
        return self.handle(UNKNOWN_BASE + k)

    def values(self, i: int) -> list[dict[str, Any]]:
        """3 to 8 values in the REST API's input form (what a PUT or a batch item carries)."""
        prefix = self.prefix_of(i)
        suffix = self.suffix(i)
        h = mix(self._hash(i) ^ 0x5DEECE66D)
        domain = self._domains[prefix]
        values: list[dict[str, Any]] = [
            {
                "index": 1,
                "type": "URL",
                "data": {"format": "string", "value": f"https://{domain}/p/{quote(suffix)}"},
            },
            {
                "index": 1001,
                "type": "TEMPLATE",
                "data": {"format": "string", "value": f"{prefix}/tpl-{_TEMPLATES[h % 4]}-v2"},
            },
        ]
        attributes = (
            ("productName", _PRODUCTS[(h >> 2) % len(_PRODUCTS)]),
            ("batchNo", f"B{_date(h >> 5)}{(h >> 16) % 1000:03d}"),
            ("productionDate", "{}-{}-{}".format(*_split_date(_date(h >> 26)))),
            ("manufacturer", f"{prefix} Manufacturing Co., Ltd."),
            ("origin", _ORIGINS[(h >> 33) % len(_ORIGINS)]),
            ("model", f"M-{(h >> 36) % 900 + 100}"),
        )
        extra = 1 + (h >> 45) % 6  # 1..6 attributes: 3..8 values
        for n in range(extra):
            kind, text = attributes[n]
            values.append(
                {"index": 2000 + n, "type": kind, "data": {"format": "string", "value": text}}
            )
        return values

    def record(self, i: int) -> dict[str, Any]:
        """``{"handle": ..., "values": [...]}``: one batch item, or one JSONL import line."""
        return {"handle": self.handle(i), "values": self.values(i)}

    def describe(self) -> dict[str, Any]:
        """What a report needs to name this population again."""
        return {"prefixes": list(self.prefixes), "seed": self.seed, "prefix_skew": self.prefix_skew}


def _split_date(text: str) -> tuple[str, str, str]:
    return text[:4], text[4:6], text[6:8]


def api_path(handle: str) -> str:
    """The resolution path of ``handle`` (percent-encoded as clients send it)."""
    return "/api/handles/" + quote(handle, safe="/")


def write_jsonl(path: Path, population: Population, indexes: Iterator[int] | range) -> int:
    """Write the records of ``indexes`` to ``path`` as JSONL (``idis import``'s input).

    Returns the number of bytes written.
    """
    dumps = orjson.dumps
    record = population.record
    written = 0
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for i in indexes:
            chunk.append(dumps(record(i)))
            if len(chunk) >= 10_000:
                data = b"\n".join(chunk) + b"\n"
                out.write(data)
                written += len(data)
                chunk.clear()
        if chunk:
            data = b"\n".join(chunk) + b"\n"
            out.write(data)
            written += len(data)
    return written
