"""Industry data templates (数据模板): what they say and whether a record's values obey them.

A template is itself a handle (as IDHub does, e.g. ``88.100.1/TEMPLATE.battery``): each of its
versions is one value of type ``IDIS.TEMPLATE`` whose data is the version's JSON document
(format ``string``)::

    {"prefix": "88.100.1", "version": 2, "industry": {...},
     "items": [{"name": "电池容量", "key": "capacity", "index": 2001,
                "type": "number", "precision": 1, "minimum": 0, "maximum": 500,
                "required": true, "unique": false, "searchable": true,
                "state": "enabled"}, ...]}

The version with the highest number is the one records are checked against.  Versions are
kept: a write of a template handle may add a version but never drop or change one, and a new
version keeps every item of the one before it (same index, key and type); an item goes away
only by ``"state": "disabled"``.  A disabled item is neither required nor checked, so records
written under an older version stay valid.

``searchable`` (default false), like ``unique``, is a flag of an item: only the values of
enabled searchable items are kept in the search index (:mod:`resolver.search`), so a template
declares the few attributes it is searched by (a serial number, a batch, a production date)
and a template without any costs its records no index row.  A later version may make an item
searchable (records written after it are indexed) but never unflag one, even when disabling
it: records checked by the earlier version hold index rows, and only a template none of whose
versions ever declared a searchable item lets a write skip looking for them
(:attr:`Template.indexed`).

A record names its template with a value at index 1001 of type ``TEMPLATE`` whose data is the
template's handle.  An item's value sits at the item's index with the item's key as its type
and its data in format ``string``: values are typed by their lexical form, checked here
(``12.5``, ``true``, ``2026-01-31``, a JSON array of strings for a list), so every existing
client and codec carries them unchanged.

Everything here is pure: reading templates and refusing writes belong to
:mod:`registry.templates`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from itertools import pairwise
from typing import Any

from resolver.errors import HandleError, InvalidValue
from resolver.identifiers import Handle
from resolver.values import HandleValue

TEMPLATE_INDEX = 1001
TEMPLATE_REF = "TEMPLATE"
TEMPLATE_TYPE = "IDIS.TEMPLATE"
MIN_ITEM_INDEX = 2000
MAX_CLAIM_CHARS = 256
"""Unique values longer than this are claimed by their SHA-256 (an index entry stays small)."""

SCALAR_TYPES = frozenset(
    {"text", "number", "date", "date-time", "boolean", "enumeration", "url", "reference"}
)
TYPES = SCALAR_TYPES | {"list"}
_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_URL = re.compile(r"https?://[^\s/?#@]+(?:[/?#]\S*)?", re.IGNORECASE)
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")


class TemplateError(ValueError):
    """A template document that does not describe a template (the message says why)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """The type of an item (or of a list's elements) and its constraints."""

    type: str
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    precision: int | None = None
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    choices: tuple[str, ...] = ()
    element: Rule | None = None


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    key: str
    index: int
    rule: Rule
    required: bool = False
    unique: bool = False
    enabled: bool = True
    searchable: bool = False
    """Whether the item's values are kept in the search index (while it is enabled)."""


@dataclass(frozen=True, slots=True)
class Template:
    prefix: str
    version: int
    items: tuple[Item, ...]
    industry: Mapping[str, Any]

    @property
    def indexed(self) -> bool:
        """Whether an item is flagged searchable, enabled or not: if not, no version of this
        template's handle up to this one has any (a version never unflags one), so records
        checked against them hold no index rows."""
        return any(item.searchable for item in self.items)

    def item_at(self, index: int) -> Item | None:
        return next((item for item in self.items if item.index == index), None)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: which item (index and key) and which rule."""

    index: int
    key: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"item {self.key} (index {self.index}): {self.rule}: {self.detail}"


# --- reading template documents ------------------------------------------------------------


def _get(doc: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = doc.get(name)
    if value is None:
        return default
    # bool is an int in Python, not in JSON: keep true out of integer fields.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TemplateError(f"{name!r} must be {kind.__name__}")
    return value


def _decimal(doc: Mapping[str, Any], name: str) -> Decimal | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TemplateError(f"{name!r} must be a number")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise TemplateError(f"{name!r} must be a number") from None


def _rule(doc: Mapping[str, Any], *, nested: bool = False) -> Rule:
    kind = doc.get("type")
    allowed = SCALAR_TYPES if nested else TYPES
    if kind not in allowed:
        raise TemplateError(f"type must be one of {', '.join(sorted(allowed))}, not {kind!r}")
    pattern = _get(doc, "pattern", str, None)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as error:
            raise TemplateError(f"pattern {pattern!r}: {error}") from None
    choices = _get(doc, "choices", list, [])
    if (kind == "enumeration" and not choices) or not all(isinstance(c, str) for c in choices):
        raise TemplateError("an enumeration needs 'choices', a list of strings")
    element = None
    if kind == "list":
        of = doc.get("element")
        if not isinstance(of, dict):
            raise TemplateError("a list needs 'element', the rule of its elements")
        element = _rule(of, nested=True)
    rule = Rule(
        type=kind,
        min_length=_get(doc, "minLength", int, None),
        max_length=_get(doc, "maxLength", int, None),
        pattern=pattern,
        precision=_get(doc, "precision", int, None),
        minimum=_decimal(doc, "minimum"),
        maximum=_decimal(doc, "maximum"),
        choices=tuple(choices),
        element=element,
    )
    for name, bound in (("minLength", rule.min_length), ("maxLength", rule.max_length)):
        if bound is not None and bound < 0:
            raise TemplateError(f"{name!r} must be >= 0")
    if rule.precision is not None and rule.precision < 0:
        raise TemplateError("'precision' must be >= 0")
    return rule


def _item(doc: object) -> Item:
    if not isinstance(doc, dict):
        raise TemplateError("each item must be an object")
    name = _get(doc, "name", str, "")
    key = _get(doc, "key", str, "")
    index = _get(doc, "index", int, None)
    if not key or not name:
        raise TemplateError("each item needs a 'name' and an English 'key'")
    if index is None or not MIN_ITEM_INDEX <= index < 2**31:
        raise TemplateError(f"item {key}: 'index' must be an integer >= {MIN_ITEM_INDEX}")
    state = doc.get("state", "enabled")
    if state not in ("enabled", "disabled"):
        raise TemplateError(f"item {key}: 'state' must be 'enabled' or 'disabled'")
    try:
        rule = _rule(doc)
    except TemplateError as error:
        raise TemplateError(f"item {key}: {error}") from None
    return Item(
        name=name,
        key=key,
        index=index,
        rule=rule,
        required=_get(doc, "required", bool, False),
        unique=_get(doc, "unique", bool, False),
        enabled=state == "enabled",
        searchable=_get(doc, "searchable", bool, False),
    )


@lru_cache(maxsize=1024)
def parse_template(text: str) -> Template:
    """The template a version's JSON document describes; :class:`TemplateError` if none.

    Memoized on the text: records are checked against the same few documents over and over.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise TemplateError("a template is a JSON object") from None
    if not isinstance(doc, dict):
        raise TemplateError("a template is a JSON object")
    prefix = _get(doc, "prefix", str, "")
    version = _get(doc, "version", int, None)
    if not prefix or version is None or version < 1:
        raise TemplateError("a template needs a 'prefix' and a 'version' >= 1")
    raw_items = _get(doc, "items", list, [])
    items = tuple(_item(raw) for raw in raw_items)
    for field in ("index", "key"):
        seen = [getattr(item, field) for item in items]
        if len(set(seen)) != len(seen):
            raise TemplateError(f"two items share one {field}")
    industry = _get(doc, "industry", dict, {})
    return Template(prefix, version, items, industry)


def check_versions(new: Sequence[Template], old: Sequence[Template]) -> None:
    """Refuse a template handle's new versions unless they keep what came before.

    ``new`` and ``old`` are the versions after and before the write.  Every old version must
    still be there unchanged, version numbers are distinct, and each version keeps every item
    of the one before it with the same index, key and type (disable, never delete), and
    searchable if it was (see the module's docstring).
    """
    if not new:
        raise TemplateError("a template handle keeps at least one version")
    by_version = {t.version: t for t in new}
    if len(by_version) != len(new):
        raise TemplateError("two values hold the same template version")
    for before in old:
        if by_version.get(before.version) != before:
            raise TemplateError(f"version {before.version} is kept as it was")
    ordered = sorted(new, key=lambda t: t.version)
    for earlier, later in pairwise(ordered):
        for item in earlier.items:
            kept = later.item_at(item.index)
            if kept is None or (kept.key, kept.rule.type) != (item.key, item.rule.type):
                raise TemplateError(
                    f"version {later.version} drops or retypes item {item.key} "
                    f"(index {item.index}): disable it instead"
                )
            if item.searchable and not kept.searchable:
                raise TemplateError(
                    f"version {later.version} makes item {item.key} (index {item.index}) "
                    "not searchable: records indexed by earlier versions keep their rows"
                )


# --- checking values -------------------------------------------------------------------------


Broken = tuple[str, str] | None
"""The broken rule and why, or None."""


def _text(rule: Rule, text: str) -> Broken:
    if rule.min_length is not None and len(text) < rule.min_length:
        return "minLength", f"shorter than {rule.min_length} characters"
    if rule.max_length is not None and len(text) > rule.max_length:
        return "maxLength", f"longer than {rule.max_length} characters"
    if rule.pattern is not None and _compiled(rule.pattern).fullmatch(text) is None:
        return "pattern", f"does not match {rule.pattern}"
    return None


def _number(rule: Rule, text: str) -> Broken:
    match = _NUMBER.fullmatch(text)
    if match is None:
        return "type", f"{text[:40]!r} is not a decimal number"
    if rule.precision is not None and len(match.group(1) or "") > rule.precision:
        return "precision", f"more than {rule.precision} decimal places"
    if rule.minimum is not None and Decimal(text) < rule.minimum:
        return "minimum", f"below {rule.minimum}"
    if rule.maximum is not None and Decimal(text) > rule.maximum:
        return "maximum", f"above {rule.maximum}"
    return None


def _date(rule: Rule, text: str) -> Broken:
    if _DATE.fullmatch(text) is None or not _valid(date.fromisoformat, text):
        return "type", f"{text[:40]!r} is not a date YYYY-MM-DD"
    return None


def _date_time(rule: Rule, text: str) -> Broken:
    if _DATE_TIME.fullmatch(text) is None or not _valid(
        datetime.fromisoformat, text.replace("Z", "+00:00")
    ):
        return "type", f"{text[:40]!r} is not an ISO 8601 date-time with a time zone"
    return None


def _boolean(rule: Rule, text: str) -> Broken:
    return None if text in ("true", "false") else ("type", "a boolean is true or false")


def _enumeration(rule: Rule, text: str) -> Broken:
    if text not in rule.choices:
        return "enumeration", f"not one of {', '.join(rule.choices)}"
    return None


def _url(rule: Rule, text: str) -> Broken:
    if _URL.fullmatch(text) is None:
        return "type", f"{text[:40]!r} is not an http(s) URL"
    return None


def _reference(rule: Rule, text: str) -> Broken:
    if not _valid(Handle.parse, text):
        return "type", f"{text[:40]!r} is not an identifier prefix/suffix"
    return None


def _list(rule: Rule, text: str) -> Broken:
    assert rule.element is not None
    try:
        elements = json.loads(text)
    except ValueError:
        elements = None
    if not isinstance(elements, list) or not all(isinstance(e, str) for e in elements):
        return "type", "a list is a JSON array of strings"
    check = _CHECKS[rule.element.type]
    for n, element in enumerate(elements):
        broken = check(rule.element, element)
        if broken is not None:
            return f"element.{broken[0]}", f"element {n}: {broken[1]}"
    return None


_CHECKS: dict[str, Callable[[Rule, str], Broken]] = {
    "text": _text,
    "number": _number,
    "date": _date,
    "date-time": _date_time,
    "boolean": _boolean,
    "enumeration": _enumeration,
    "url": _url,
    "reference": _reference,
    "list": _list,
}
assert set(_CHECKS) == TYPES


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _valid(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except (ValueError, HandleError):
        return False
    return True


def validate(template: Template, values: Sequence[HandleValue]) -> list[Violation]:
    """Every rule of ``template`` that ``values`` (a whole record) break; empty if none.

    Values at indexes below 2000 are not the template's business; one at 2000 or above must
    belong to an item.  Disabled items are neither required nor checked.
    """
    violations = []
    present = {v.index: v for v in values if v.index >= MIN_ITEM_INDEX}
    for item in template.items:
        if not item.enabled:
            present.pop(item.index, None)
            continue
        value = present.pop(item.index, None)
        if value is None:
            if item.required:
                violations.append(Violation(item.index, item.key, "required", "missing"))
            continue
        if value.type != item.key and value.type.upper() != item.key.upper():
            detail = f"the value's type must be {item.key}, not {value.type}"
            violations.append(Violation(item.index, item.key, "key", detail))
        elif value.data.format != "string":
            detail = f"data must be format string, not {value.data.format}"
            violations.append(Violation(item.index, item.key, "format", detail))
        else:
            broken = _CHECKS[item.rule.type](item.rule, value.data.value)
            if broken is not None:
                violations.append(Violation(item.index, item.key, *broken))
    for index, value in sorted(present.items()):
        detail = f"template version {template.version} has no item at this index"
        violations.append(Violation(index, value.type, "unknown item", detail))
    return violations


Claim = tuple[str, int, str]
"""A unique value taken: ``(template handle's key, item index, value)``."""


class UniqueValueTaken(InvalidValue):
    """Unique template values that another record holds already (Handle code 202).

    ``taken`` maps each refused record's key to the message naming its item and rule; a store
    raises this for a whole write, which then changes nothing.
    """

    def __init__(self, taken: Mapping[str, str]) -> None:
        super().__init__(next(iter(taken.values())))
        self.taken = dict(taken)


def claims(template_key: str, template: Template, values: Sequence[HandleValue]) -> list[Claim]:
    """The unique values ``values`` (a record valid under ``template``) take."""
    by_index = {v.index: v for v in values}
    taken = []
    for item in template.items:
        value = by_index.get(item.index)
        if item.unique and item.enabled and value is not None:
            text = str(value.data.value)
            if len(text) > MAX_CLAIM_CHARS:
                text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
            taken.append((template_key, item.index, text))
    return taken


def taken_message(claim: Claim) -> str:
    template, index, value = claim
    return f"item at index {index} of template {template}: unique: {value[:80]!r} is taken"


def unique_clashes(
    claimed: Mapping[Claim, str], writes: Sequence[tuple[str, Sequence[Claim]]]
) -> dict[str, str]:
    """Which of ``writes`` (key, its claims) would take a value ``claimed`` (claim -> holding
    key) holds for another key, or one an earlier write of the list takes: key -> message.

    The in-memory store's rule; SQL stores get the same from a unique index.
    """
    holders = dict(claimed)
    clashes: dict[str, str] = {}
    for key, wanted in writes:
        for claim in wanted:
            if holders.get(claim, key) != key:
                clashes.setdefault(key, taken_message(claim))
        for claim in wanted:
            holders.setdefault(claim, key)
    return clashes


def named_template(values: Sequence[HandleValue]) -> str | None:
    """The handle of the template a record names at index 1001, if it names one."""
    for value in values:
        if value.index == TEMPLATE_INDEX and value.type.upper() == TEMPLATE_REF:
            return str(value.data.value) if value.data.format == "string" else ""
    return None


def template_versions(values: Sequence[HandleValue]) -> list[Template]:
    """The versions a template handle's values hold (:class:`TemplateError` if one is bad)."""
    versions = []
    for value in values:
        if is_template_value(value):
            if value.data.format != "string":
                raise TemplateError(f"value {value.index}: a template is format string")
            try:
                versions.append(parse_template(value.data.value))
            except TemplateError as error:
                raise TemplateError(f"value {value.index}: {error}") from None
    return versions


def is_template_value(value: HandleValue) -> bool:
    """True for a value holding a template version (type ``IDIS.TEMPLATE``, any case)."""
    kind = value.type
    # The length first: most types are not 13 characters long, and upper() costs.
    return len(kind) == len(TEMPLATE_TYPE) and kind.upper() == TEMPLATE_TYPE


def current(versions: Sequence[Template]) -> Template | None:
    return max(versions, key=lambda t: t.version, default=None)
