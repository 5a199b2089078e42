"""GS1 links as handle values, the resolver's choice among them, and their renderings.

A link is a handle value of type ``GS1.{linkType}`` (``GS1.pip``, ``GS1.defaultLink``,
``GS1.handledBy``...: the term of the GS1 Web Vocabulary).  Its data is the target URL, or a
JSON object ``{"href", "title", "hreflang", "type", "context"}`` when the link carries more
(``hreflang`` a language tag or a list of them).  So links are written like any other value:
REST ``PUT``, batch, ``idis import``.  ``GS1.defaultLink`` is *the* default link (the first by
index when a record has several); ``GS1.defaultLinkMulti`` are default links told apart by
language.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from resolver.values import HandleValue

VALUE_TYPE_PREFIX = "GS1."
VOC = "https://gs1.org/voc/"
DEFAULT = "defaultLink"
DEFAULT_MULTI = "defaultLinkMulti"
HANDLED_BY = "handledBy"
JSONLD_CONTEXT = "https://ref.gs1.org/standards/resolver/linkset-context"
_VOC_FORMS = (
    "gs1:",
    "https://gs1.org/voc/",
    "http://gs1.org/voc/",
    "https://www.gs1.org/voc/",
    "http://www.gs1.org/voc/",
    "https://ref.gs1.org/voc/",
)


@dataclass(frozen=True, slots=True)
class Link:
    term: str
    """The link type, a GS1 Web Vocabulary term (``pip``)."""
    href: str
    title: str
    hreflang: tuple[str, ...] = ()
    type: str = ""
    context: str = ""
    index: int = 0

    @property
    def rel(self) -> str:
        return VOC + self.term

    def target(self, query: str) -> str:
        """The URL to redirect to, with the request's query string passed on."""
        if not query:
            return self.href
        return self.href + ("&" if "?" in self.href else "?") + query


def link_type_term(text: str) -> str:
    """``gs1:pip``, a vocabulary URI or a bare term, as the term (``pip``)."""
    for form in _VOC_FORMS:
        if text.startswith(form):
            return text[len(form) :]
    return text


def _link(value: HandleValue) -> Link | None:
    if not value.type.startswith(VALUE_TYPE_PREFIX) or value.data.format != "string":
        return None
    term = value.type[len(VALUE_TYPE_PREFIX) :]
    text: str = value.data.value
    fields: dict[str, Any] = {"href": text}
    if text.startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(parsed, dict):
            return None
        fields = parsed
    href = fields.get("href")
    if not term or not isinstance(href, str) or not href.startswith(("http://", "https://")):
        return None
    lang = fields.get("hreflang") or ()
    langs = (lang,) if isinstance(lang, str) else tuple(x for x in lang if isinstance(x, str))
    return Link(
        term,
        href,
        str(fields.get("title") or term),
        langs,
        str(fields.get("type") or ""),
        str(fields.get("context") or ""),
        value.index,
    )


def links_of(values: Iterable[HandleValue]) -> list[Link]:
    """The usable GS1 links among ``values`` (public ones only), in index order; values that
    are not links, or whose data is no http(s) URL, are left out, and so is every
    ``defaultLink`` after the first: a record has exactly one default link."""
    found = [link for v in values if v.public_read and (link := _link(v)) is not None]
    found.sort(key=lambda link: link.index)
    defaults = [link for link in found if link.term == DEFAULT][1:]
    return [link for link in found if link not in defaults]


def accept_languages(header: str) -> list[tuple[str, float]]:
    """``Accept-Language`` as ``(range, q)``, lower-cased, best first; ``q=0`` ranges dropped."""
    ranges = []
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, number = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranges.append((tag.strip().lower(), q))
    ranges.sort(key=lambda r: -r[1])
    return ranges


def _language_score(link: Link, ranges: Sequence[tuple[str, float]]) -> float:
    """How well ``link`` fits the ranges: the best q of a range naming its language (exactly,
    or by primary subtag either way); a link without language fits every request a little."""
    if not link.hreflang:
        return 0.001
    best = 0.0
    for lang in (x.lower() for x in link.hreflang):
        for tag, q in ranges:
            if (
                tag == "*"
                or tag == lang
                or lang.startswith(tag + "-")
                or tag.startswith(lang + "-")
            ):
                best = max(best, q if tag != "*" else q / 2)
                break
        else:
            best = max(best, 0.0)
    return best


class Verdict(enum.Enum):
    REDIRECT = 307
    MULTIPLE = 300
    MISSING = 404


@dataclass(frozen=True, slots=True)
class Choice:
    verdict: Verdict
    link: Link | None = None
    candidates: tuple[Link, ...] = ()


def default_link(links: Sequence[Link]) -> Link | None:
    """The ``gs1:defaultLink``, or, when there is none, the only link if there is exactly
    one."""
    for link in links:
        if link.term == DEFAULT:
            return link
    return links[0] if len(links) == 1 else None


def choose(
    links: Sequence[Link],
    link_type: str | None,
    languages: Sequence[tuple[str, float]] = (),
    context: str = "",
) -> Choice:
    """Where a request for ``link_type`` (None: the default) goes.

    Among the links of that type (for the default: ``defaultLinkMulti`` and the default link),
    those matching ``context`` if any do, then those fitting ``languages`` best; one left, or
    several with one target, is a redirect; several is 300 (for the default, the default link
    breaks the tie); none of the type is 404.
    """
    fallback: Link | None = None
    if link_type is None:
        fallback = default_link(links)
        pool = [link for link in links if link.term == DEFAULT_MULTI]
        if fallback is not None:
            pool.append(fallback)
    else:
        pool = [link for link in links if link.term == link_type]
    if not pool:
        return Choice(Verdict.MISSING if link_type else Verdict.MULTIPLE, None, tuple(links))
    if context and any(link.context == context for link in pool):
        pool = [link for link in pool if link.context == context]
    if languages and len(pool) > 1:
        scores = [_language_score(link, languages) for link in pool]
        top = max(scores)
        pool = [link for link, s in zip(pool, scores, strict=True) if s == top]
    if len({link.href for link in pool}) == 1:
        return Choice(Verdict.REDIRECT, pool[0], tuple(pool))
    if fallback is not None and fallback in pool:
        return Choice(Verdict.REDIRECT, fallback, tuple(pool))
    return Choice(Verdict.MULTIPLE, None, tuple(pool))


# --- renderings ----------------------------------------------------------------------------


def _target_object(link: Link) -> dict[str, Any]:
    target: dict[str, Any] = {"href": link.href, "title": link.title}
    if link.hreflang:
        target["hreflang"] = list(link.hreflang)
    if link.type:
        target["type"] = link.type
    if link.context:
        target["context"] = link.context
    return target


def linkset(anchor: str, links: Sequence[Link]) -> bytes:
    """The RFC 9264 JSON linkset: one context object, its ``anchor`` the Digital Link, each
    relation type the link type's full URI with its target objects."""
    context: dict[str, Any] = {"anchor": anchor}
    for link in links:
        context.setdefault(link.rel, []).append(_target_object(link))
    return orjson.dumps({"linkset": [context]})


def _param(name: str, text: str) -> str:
    if text.isascii() and '"' not in text and "\\" not in text:
        return f'; {name}="{text}"'
    # RFC 8187 for text HTTP header values cannot carry as is.
    return f"; {name}*=UTF-8''{quote(text, safe='')}"


_URL_SAFE = ":/?#[]@!$&()*+,;=%~-._"


def header_url(url: str) -> str:
    """``url`` fit for an HTTP header: characters outside ASCII percent-encoded (UTF-8)."""
    return quote(url, safe=_URL_SAFE)


def link_header(links: Sequence[Link], extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """An RFC 8288 ``Link`` header listing ``links`` (rel as a ``gs1:`` CURIE, with title,
    hreflang and type) and the ``(url, rel)`` pairs of ``extra``."""
    parts = [f'<{header_url(url)}>; rel="{rel}"' for url, rel in extra]
    for link in links:
        text = f'<{header_url(link.href)}>; rel="gs1:{link.term}"'
        text += _param("title", link.title)
        for lang in link.hreflang:
            text += _param("hreflang", lang)
        if link.type:
            text += _param("type", link.type)
        parts.append(text)
    return ", ".join(parts).encode("latin-1")


def description(root: str, name: str) -> bytes:
    """The resolver description file served at ``/.well-known/gs1resolver``."""
    return orjson.dumps(
        {
            "name": name,
            "resolverRoot": root,
            "supportedPrimaryKeys": ["all"],
            "supportedLinkType": [
                {"namespace": VOC, "prefix": "gs1:"},
            ],
            "linkTypeDefaultCanBeLinkset": False,
            "supportedContextValuesEnumerated": [],
        }
    )
