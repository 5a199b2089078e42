"""Refusing writes that break a data template, whatever door they came through.

The registrar calls :meth:`TemplateCheck.check` with every record it is about to write (REST
PUT, batch items, value deletions; the SNMS and native front ends write through the same
registrar), and the bulk importer calls it for each imported record, so no door stores a record
its template refuses.  A refusal is :class:`~resolver.errors.InvalidValue` (Handle code 202)
naming the item and the rule; each front end maps it to its own error.  The rules themselves
live in :mod:`resolver.templates`.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.authorization import Fetch
from resolver.errors import HandleError, InvalidValue
from resolver.identifiers import Handle
from resolver.templates import (
    TEMPLATE_TYPE,
    Template,
    TemplateError,
    check_versions,
    current,
    named_template,
    template_versions,
    validate,
)
from resolver.values import HandleValue, Record

MAX_REPORTED = 5
"""Violations named in one refusal; a record breaking more rules says how many more."""


def _holds_template(values: Sequence[HandleValue]) -> bool:
    return any(v.type.upper() == TEMPLATE_TYPE for v in values)


class TemplateCheck:
    """Checks records against their templates, read with ``fetch`` (through the node's caches,
    which every write of a template handle invalidates)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    async def check(
        self, handle: Handle, values: Sequence[HandleValue], old: Record | None = None
    ) -> None:
        """Raise :class:`InvalidValue` unless ``values`` may become ``handle``'s record.

        ``old`` is the record being replaced, if any: a template handle keeps its versions.
        """
        if _holds_template(values) or (old is not None and _holds_template(old.values)):
            try:
                before = template_versions(old.values) if old is not None else []
            except TemplateError:
                before = []  # written before validation existed: nothing to keep
            try:
                check_versions(template_versions(values), before)
            except TemplateError as error:
                raise InvalidValue(f"template: {error}", handle=handle.text) from None
        name = named_template(values)
        if name is None:
            return
        template = await self.template(name, handle.text)
        violations = validate(template, values)
        if violations:
            shown = "; ".join(str(v) for v in violations[:MAX_REPORTED])
            more = len(violations) - MAX_REPORTED
            if more > 0:
                shown += f"; and {more} more"
            raise InvalidValue(
                f"template {name} version {template.version}: {shown}", handle=handle.text
            )

    async def template(self, name: str, handle: str | None = None) -> Template:
        """The current version of the template handle ``name``; InvalidValue if there is none."""
        try:
            key = Handle.parse(name).key
        except HandleError:
            raise InvalidValue(
                f"index 1001 (TEMPLATE) must name a template handle, not {name[:80]!r}",
                handle=handle,
            ) from None
        record = await self._fetch(key)
        try:
            found = current(template_versions(record.values)) if record is not None else None
        except TemplateError:
            found = None
        if found is None:
            raise InvalidValue(f"no template at {name}", handle=handle)
        return found
