"""Refusing writes that break a data template, whatever door they came through.

The registrar calls :meth:`TemplateCheck.check` with every record it is about to write (REST
PUT, batch items, value deletions; the SNMS and native front ends write through the same
registrar), and the bulk importer calls it for each imported record, so no door stores a record
its template refuses.  A refusal is :class:`~resolver.errors.InvalidValue` (Handle code 202)
naming the item and the rule; each front end maps it to its own error.  The rules themselves
live in :mod:`resolver.templates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from registry.authorization import Fetch
from resolver.codecs.stored import decode_values
from resolver.errors import HandleError, InvalidValue
from resolver.identifiers import Handle
from resolver.templates import (
    Claim,
    Template,
    TemplateError,
    Violation,
    check_versions,
    claims,
    current,
    is_template_value,
    named_template,
    template_versions,
    validate,
)
from resolver.values import HandleValue, Record

MAX_REPORTED = 5
"""Violations named in one refusal; a record breaking more rules says how many more."""
TEMPLATE_SUFFIX = "TEMPLATE."
"""Template handles are ``<prefix>/TEMPLATE.<name>``: a key range the importer can read."""


def _holds_template(values: Sequence[HandleValue]) -> bool:
    return any(map(is_template_value, values))


@lru_cache(maxsize=4096)
def _template_key(name: str) -> str | None:
    """The folded key of the template handle ``name``, or None if it cannot be one."""
    try:
        handle = Handle.parse(name)
    except HandleError:
        return None
    return handle.key if handle.suffix.upper().startswith(TEMPLATE_SUFFIX) else None


def _refusal(name: str, template: Template, violations: Sequence[Violation]) -> str:
    shown = "; ".join(str(v) for v in violations[:MAX_REPORTED])
    more = len(violations) - MAX_REPORTED
    if more > 0:
        shown += f"; and {more} more"
    return f"template {name} version {template.version}: {shown}"


def _named(values: Sequence[HandleValue]) -> tuple[str, str] | None:
    """The template handle a record names at index 1001 (its text and key), if any.

    A 1001 value naming anything but a ``<prefix>/TEMPLATE.<name>`` handle (a template kept by
    another system, carried as a label) names no template of this registry and checks nothing;
    one naming such a handle that holds no template is refused.
    """
    name = named_template(values)
    key = _template_key(name) if name is not None else None
    return None if name is None or key is None else (name, key)


class TemplateCheck:
    """Checks records against their templates, read with ``fetch`` (through the node's caches,
    which every write of a template handle invalidates)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def check(
        self, handle: Handle, values: Sequence[HandleValue], old: Record | None = None
    ) -> tuple[Claim, ...] | None:
        """Raise :class:`InvalidValue` unless ``values`` may become ``handle``'s record; the
        unique values it takes (see :attr:`resolver.values.Record.claims`: None when neither
        it nor ``old`` names a template, so that the store leaves the key's claims alone).

        ``old`` is the record being replaced, if any: a template handle keeps its versions.
        """
        return (await self.checked(handle, values, old))[0]

    async def checked(
        self,
        handle: Handle,
        values: Sequence[HandleValue],
        old: Record | None = None,
        memo: dict[str, Template] | None = None,
    ) -> tuple[tuple[Claim, ...] | None, Template | None]:
        """:meth:`check`'s claims, and the template version ``values`` were checked against
        (None if they name none), whose item types type the record's search entries.

        ``memo`` (template key -> version) keeps the templates read for one batch, whose
        records are all checked before any is written: a batch of 1000 records of one
        template reads it once rather than through the caches 1000 times."""
        if _holds_template(values) or (old is not None and _holds_template(old.values)):
            if _template_key(handle.text) is None:
                raise InvalidValue(
                    f"template versions live in handles <prefix>/{TEMPLATE_SUFFIX}<name>",
                    handle=handle.text,
                )
            try:
                before = template_versions(old.values) if old is not None else []
            except TemplateError:
                before = []  # written before validation existed: nothing to keep
            try:
                check_versions(template_versions(values), before)
            except TemplateError as error:
                raise InvalidValue(f"template: {error}", handle=handle.text) from None
        named = _named(values)
        if named is None:
            return (() if old is not None and _named(old.values) is not None else None), None
        name, key = named
        template = memo.get(key) if memo is not None else None
        if template is None:
            template = await self._current(name, key, handle.text)
            if memo is not None:
                memo[key] = template
        violations = validate(template, values)
        if violations:
            raise InvalidValue(_refusal(name, template, violations), handle=handle.text)
        taken = tuple(claims(key, template, values))
        # A new handle holds no claims yet: with none to take, the store need not look.
        return (None if not taken and old is None else taken), template

    async def _current(self, name: str, key: str, handle: str | None) -> Template:
        """The current version of the template handle ``name`` (folded ``key``)."""
        record = await self._fetch(key)
        found = _current(record.values) if record is not None else None
        if found is None:
            raise InvalidValue(f"no template at {name}", handle=handle)
        return found


def _current(values: Sequence[HandleValue]) -> Template | None:
    try:
        return current(template_versions(values))
    except TemplateError:
        return None


def template_range(prefix_key: str) -> tuple[str, str]:
    """The key range ``[low, high)`` of the template handles under a (folded) prefix."""
    low = f"{prefix_key}/{TEMPLATE_SUFFIX}"
    return low, low[:-1] + "/"  # "/" is the character after "."


def _suspect(data: bytes) -> bool:
    """False if ``data`` (stored forms, lowercased) neither holds a template (a type ending in
    ``.template"``) nor names one (``/template.``): then it needs no decoding.  Plain finds, as
    an import runs this on every row (a case-insensitive regex costs several times more)."""
    return b"template." in data or b'.template"' in data


def may_be_templated(data: bytes) -> bool:
    """False if the stored form ``data`` surely neither names nor holds a template (then it
    has no search entries either)."""
    return _suspect(data.lower())


class ImportGate:
    """The template check of ``idis import``: synchronous, on the templates stored under the
    node's prefixes when the import starts (the importer parses without waiting on the
    database).  Templates themselves are written over REST, where their versions are checked
    against the ones they replace, never imported."""

    def __init__(self, stored: Iterable[tuple[str, bytes]]) -> None:
        """``stored`` is ``(key, stored form)`` of the template handles (see
        :func:`template_range`)."""
        self._templates: dict[str, Template] = {}
        for key, data in stored:
            found = _current(decode_values(data))
            if found is not None:
                self._templates[key] = found

    @property
    def templates(self) -> Mapping[str, Template]:
        return self._templates

    def any_suspect(self, forms: Sequence[bytes]) -> bool:
        """False if none of these stored forms can be refused: an import asks this of a
        block of rows at once (a fraction of a microsecond a row), then :meth:`refusal` of
        each row only for a block that may hold a refusal."""
        return _suspect(b"".join(forms).lower())

    def template_named(self, name: str) -> Template | None:
        """The template (among those read at the start) at the handle ``name``, if any."""
        key = _template_key(name)
        return None if key is None else self._templates.get(key)

    def refusal(self, data: bytes) -> str | None:
        """Why the record whose stored form is ``data`` may not be imported, or None."""
        if not _suspect(data.lower()):
            return None
        values = decode_values(data)
        if _holds_template(values):
            return "templates are written over the REST API (their versions are kept), not imported"
        named = _named(values)
        if named is None:
            return None
        name, key = named
        template = self._templates.get(key)
        if template is None:
            return f"no template at {name} on this node"
        violations = validate(template, values)
        if violations:
            return _refusal(name, template, violations)
        if any(item.unique and item.enabled for item in template.items):
            # Claims are taken by the registrar's writes; the COPY of an import takes none.
            return f"template {name} has unique items: write its records through /api/batch"
        return None
