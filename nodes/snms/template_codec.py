"""SNMS data-template bodies (``/snms/api/v5/template``) to and from the registry's template
documents (:mod:`resolver.templates`): a translation only, the rules stay there.

The deployed API names a template by ``prefix`` and ``version``, a free string such as
``1.0.1`` that records quote as their ``templateVersion``; here that template is the handle
``<prefix>/TEMPLATE.<version>``, and each change published through ``PUT`` is one more of its
numbered versions, shown as ``revision`` (the registry's ``version``).  Field by field:

==============================  =============================================================
SNMS                            template document
==============================  =============================================================
``industryCategory``,           kept under ``industry`` as given
``industrySpecific``,
``industryTrade``,
``industrySubclass``, ``type``,
``description``
``items[i].name`` / ``idType``  ``name`` / ``key`` (the value's type in a record)
``items[i].idIndex``            ``index`` (>= 2000; a number or a string of digits)
``items[i].required``,          ``required``, ``unique``
``unique``
``items[i].searchable``         ``searchable`` (true/false or 1/0; default false, as the
                                registry's: only searchable items' values can be searched)
``items[i].state`` 1 / 0        ``"enabled"`` / ``"disabled"``
``metadata.type``               ``string`` (or IDHub's 1) is ``text``, IDHub's 2 ``number``,
                                3 ``date``; the registry's own type names pass as they are
``metadata.minLength`` ...      the rule's fields: ``minLength``, ``maxLength``, ``pattern``,
                                ``precision``, ``minimum``, ``maximum``, ``choices``,
                                ``element``
==============================  =============================================================

Every refusal is :class:`~resolver.errors.InvalidValue` naming the SNMS field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from registry.templates import TEMPLATE_SUFFIX
from resolver.errors import HandleError, InvalidValue
from resolver.identifiers import Handle
from resolver.templates import (
    MIN_ITEM_INDEX,
    TemplateError,
    is_template_value,
    parse_template,
)
from resolver.values import HandleValue

INDUSTRY_FIELDS = (
    "industryCategory",
    "industrySpecific",
    "industryTrade",
    "industrySubclass",
    "type",
    "description",
)
RULE_FIELDS = ("minLength", "maxLength", "pattern", "precision", "minimum", "maximum", "choices")
_TYPES: dict[object, str] = {"string": "text", 1: "text", 2: "number", 3: "date"}
MAX_NAME = 128

Doc = dict[str, Any]


def _bad(field: str, why: str) -> InvalidValue:
    return InvalidValue(f"{field}: {why}")


def template_handle(prefix: object, version: object) -> Handle:
    """The handle of the template ``version`` of ``prefix``."""
    if not isinstance(prefix, str) or not prefix or "/" in prefix:
        raise _bad("prefix", "a prefix such as 88.100.1 is required")
    if not isinstance(version, str) or not version.strip():
        raise _bad("version", "the template's version (its name, e.g. 1.0.1) is required")
    if len(version) > MAX_NAME or "/" in version or any(c.isspace() for c in version):
        raise _bad("version", f"at most {MAX_NAME} characters, no spaces or slashes")
    try:
        return Handle.parse(f"{prefix}/{TEMPLATE_SUFFIX}{version}")
    except HandleError as error:
        raise _bad("prefix", error.message) from None


def _index(raw: object, field: str) -> int:
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < MIN_ITEM_INDEX:
        raise _bad(field, f"an integer >= {MIN_ITEM_INDEX} (lower indexes are reserved)")
    return raw


def _state(raw: object, field: str) -> str:
    if raw in (1, "1", "enabled"):
        return "enabled"
    if raw in (0, "0", "disabled"):
        return "disabled"
    raise _bad(field, "1 (enabled) or 0 (disabled)")


def _rule(raw: object, field: str) -> Doc:
    if not isinstance(raw, dict):
        raise _bad(field, "an object: {type, minLength, maxLength, ...}")
    kind = raw.get("type", "string")
    if isinstance(kind, str | int) and not isinstance(kind, bool):
        kind = _TYPES.get(kind, kind)
    if not isinstance(kind, str):
        raise _bad(f"{field}.type", "a type name such as string, number or date")
    rule: Doc = {"type": kind}
    for name in (*RULE_FIELDS, "element"):
        if raw.get(name) is not None:
            rule[name] = raw[name]
    if isinstance(rule.get("element"), dict):
        rule["element"] = _rule(rule["element"], f"{field}.element")
    return rule


def _item(raw: object, n: int, before: Mapping[int, Doc], taken: set[int]) -> Doc:
    """The document item of SNMS item ``n`` (``before``: the current items by index)."""
    field = f"items[{n}]"
    if not isinstance(raw, dict):
        raise _bad(field, "an object: {name, idType, idIndex, metadata, ...}")
    for name in ("name", "idType"):
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise _bad(f"{field}.{name}", "a non-empty string is required")
    named = next((i for i, item in before.items() if item["key"] == raw["idType"]), None)
    if raw.get("idIndex") is None and named is not None:
        index = named  # the item of that idType: a change sent again changes nothing
    elif raw.get("idIndex") is None:  # a new item, at the next free index
        index = max([*before, *taken, MIN_ITEM_INDEX - 1]) + 1
    else:
        index = _index(raw["idIndex"], f"{field}.idIndex")
    if index in taken:
        raise _bad(f"{field}.idIndex", f"{index} is given twice")
    taken.add(index)
    old = before.get(index, {})
    if old and old["key"] != raw["idType"]:
        raise _bad(f"{field}.idType", f"index {index} is {old['key']!r}: idIndex and idType match")
    if old:
        rule = {k: v for k, v in old.items() if k == "type" or k in (*RULE_FIELDS, "element")}
    else:
        rule = {}
    if raw.get("metadata") is not None or not old:
        rule = _rule(raw.get("metadata", {}), f"{field}.metadata")
    doc: Doc = {"name": raw["name"], "key": raw["idType"], "index": index, **rule}
    for flag in ("required", "unique"):
        value = raw.get(flag, old.get(flag, False))
        if not isinstance(value, bool):
            raise _bad(f"{field}.{flag}", "true or false")
        doc[flag] = value
    searchable = raw.get("searchable", old.get("searchable", False))
    if searchable in (0, 1) and not isinstance(searchable, bool):
        searchable = bool(searchable)  # IDHub-style 1/0, as state is
    if not isinstance(searchable, bool):
        raise _bad(f"{field}.searchable", "true or false (or 1 or 0)")
    doc["searchable"] = searchable
    state = raw.get("state")
    doc["state"] = _state(state, f"{field}.state") if state is not None else old.get("state")
    doc["state"] = doc["state"] or "enabled"
    return doc


def document(body: object, *, revision: int, before: Doc | None = None) -> Doc:
    """The template document an SNMS create (``before`` None) or change body describes.

    A change keeps every item of ``before`` it does not mention (items are disabled, never
    deleted), keeps the fields an item leaves out, and adds items without ``idIndex`` at the
    next free index (one without ``idIndex`` but with the ``idType`` of an item is that item).
    The result has passed :func:`resolver.templates.parse_template`."""
    if not isinstance(body, dict):
        raise _bad("body", "a JSON object: {prefix, version, items, ...}")
    items = body.get("items")
    if not isinstance(items, list) or (before is None and not items):
        raise _bad("items", "a non-empty list of {name, idType, idIndex, metadata}")
    old = {item["index"]: item for item in before["items"]} if before else {}
    taken: set[int] = set()
    given = [_item(raw, n, old, taken) for n, raw in enumerate(items)]
    names = [item["key"] for item in given]
    for n, item in enumerate(given):
        clash = next((i for i in old.values() if i["key"] == item["key"]), None)
        if item["key"] in names[:n] or (clash is not None and clash["index"] != item["index"]):
            raise _bad(f"items[{n}].idType", f"{item['key']!r} names two items")
    merged = {**old, **{item["index"]: item for item in given}}
    industry = dict(before.get("industry", {})) if before else {}
    industry.update({k: body[k] for k in INDUSTRY_FIELDS if body.get(k) is not None})
    doc = {
        "prefix": body["prefix"],
        "version": revision,
        "industry": industry,
        "items": [merged[index] for index in sorted(merged)],
    }
    try:
        parse_template(json.dumps(doc, ensure_ascii=False))
    except TemplateError as error:
        raise _bad("template", str(error)) from None
    return doc


def revisions(values: Sequence[HandleValue]) -> dict[int, Doc]:
    """The documents a template handle's values hold, by revision (bad ones left out)."""
    found = {}
    for value in values:
        if is_template_value(value) and value.data.format == "string":
            try:
                revision = parse_template(value.data.value).version
            except TemplateError:
                continue
            found[revision] = json.loads(value.data.value)
    return found


def _render_item(item: Doc) -> Doc:
    metadata = {k: item[k] for k in (*RULE_FIELDS, "element") if k in item}
    kind = item["type"]
    return {
        "name": item["name"],
        "idType": item["key"],
        "idIndex": item["index"],
        "required": bool(item.get("required", False)),
        "unique": bool(item.get("unique", False)),
        "searchable": bool(item.get("searchable", False)),
        "state": 1 if item.get("state", "enabled") == "enabled" else 0,
        "metadata": {"type": "string" if kind == "text" else kind, **metadata},
    }


def render(handle: Handle, doc: Doc, known: Sequence[int]) -> Doc:
    """One revision of a template in the SNMS shape (``known``: every revision it has)."""
    industry = doc.get("industry", {})
    return {
        "prefix": doc["prefix"],
        "version": handle.suffix[len(TEMPLATE_SUFFIX) :],
        "handle": handle.text,
        "revision": doc["version"],
        "revisions": sorted(known),
        **{k: industry.get(k) for k in INDUSTRY_FIELDS},
        "items": [_render_item(item) for item in doc["items"]],
    }


def named_template(record_prefix: str, template_version: str) -> str:
    """The template handle a record's SNMS ``templateVersion`` names: a bare version is a
    template of the record's own prefix, a ``prefix/...`` text a handle as it is."""
    if "/" in template_version:
        return template_version
    return f"{record_prefix}/{TEMPLATE_SUFFIX}{template_version}"


def version_named(record_prefix: str, template: str) -> str:
    """:func:`named_template` backwards: what ``templateVersion`` a record shows."""
    own = f"{record_prefix}/{TEMPLATE_SUFFIX}"
    return template[len(own) :] if template.upper().startswith(own.upper()) else template
