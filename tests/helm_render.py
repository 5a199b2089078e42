"""Render the Helm chart without helm: the subset of Go templates the chart uses, nothing more.

helm cannot be installed on the project's machines (no binary downloads), so the suite renders
helm/idis with this module and validates the manifests against the Kubernetes schemas. It
implements exactly the constructs the chart's templates use and refuses anything else loudly
(``TemplateError``), so a template growing a construct this does not know fails the test rather
than rendering wrongly:

- actions ``{{ pipeline }}``, with ``{{-`` / ``-}}`` whitespace trimming and ``{{/* comments */}}``;
- ``if`` / ``else if`` / ``else`` / ``end``, ``with``, ``range`` over a list (dot = the item) or
  over a map with ``$key, $value :=`` (keys sorted, as Go does), ``define`` and ``include``;
- operands: ``.``, ``.a.b``, ``$``, ``$.a``, ``$var``, string, number and boolean literals,
  parenthesised pipelines; a missing key is an error (Helm would print nothing);
- functions: ``and or not eq default quote toYaml toJson nindent indent printf`` (``printf``
  with ``%s`` and ``%d`` only).

What this leaves unchecked (helm would catch it): Go template and sprig semantics beyond these
functions' common cases (``quote``'s escapes are JSON's, numbers keep their YAML type where Helm
reads them as float64), ``.Capabilities``, chart dependencies, ``values.schema.json``, hook
ordering and Kubernetes API-server admission (defaulting, immutable fields, CRDs installed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """A construct the subset does not implement, or a template that does not evaluate."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<var>\$[A-Za-z0-9_]*)'
    r"|(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[()|,]|:=))"
)
_WS = " \t\r\n"


@dataclass
class _Node:
    kind: str  # text, out, if, with, range, define
    arg: str = ""
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _lex(source: str) -> list[tuple[str, str]]:
    """Text and action tokens, with the trim markers already applied to the text around them."""
    tokens: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip(_WS)
        if match.group(1):
            text = text.rstrip(_WS)
        tokens.append(("text", text))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            tokens.append(("action", body))
        trim_next = bool(match.group(3))
        position = match.end()
    tail = source[position:]
    tokens.append(("text", tail.lstrip(_WS) if trim_next else tail))
    if "{{" in "".join(t for k, t in tokens if k == "text"):
        raise TemplateError("an unclosed or malformed {{ action")
    return tokens


def _parse(tokens: list[tuple[str, str]]) -> tuple[list[_Node], dict[str, list[_Node]]]:
    defines: dict[str, list[_Node]] = {}
    stream = iter(tokens)

    def block(top: bool) -> tuple[list[_Node], str]:
        nodes: list[_Node] = []
        for kind, content in stream:
            if kind == "text":
                if content:
                    nodes.append(_Node("text", content))
                continue
            keyword, _, rest = content.partition(" ")
            rest = rest.strip()
            if keyword in ("end", "else"):
                if top:
                    raise TemplateError(f"unexpected {{{{ {content} }}}}")
                return nodes, content
            if keyword in ("if", "with", "range"):
                nodes.append(conditional(keyword, rest))
            elif keyword == "define":
                name = json.loads(rest)
                body, closer = block(False)
                if closer != "end":
                    raise TemplateError(f"define {name}: {closer} not supported")
                defines[name] = body
            elif keyword in ("template", "block", "break", "continue"):
                raise TemplateError(f"{keyword} is outside the supported subset")
            else:
                nodes.append(_Node("out", content))
        if not top:
            raise TemplateError("a block without {{ end }}")
        return nodes, ""

    def conditional(keyword: str, arg: str) -> _Node:
        node = _Node(keyword, arg)
        node.body, closer = block(False)
        if closer == "else":
            node.orelse, closer = block(False)
        elif closer.startswith("else if "):
            if keyword != "if":
                raise TemplateError(f"{closer} after {keyword}")
            node.orelse = [conditional("if", closer[len("else if ") :])]
            return node
        if closer != "end":
            raise TemplateError(f"{closer} is outside the supported subset")
        return node

    nodes, _ = block(True)
    return nodes, defines


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, list | dict) and not value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise TemplateError("a value that is nil printed")
    if isinstance(value, list | dict):
        raise TemplateError(f"a {type(value).__name__} printed without toYaml/toJson")
    return str(value)


def _to_yaml(value: Any) -> str:
    return str(yaml.safe_dump(value, default_flow_style=False, sort_keys=True)).rstrip("\n")


def _indent(width: Any, text: Any) -> str:
    pad = " " * int(width)
    return "\n".join(pad + line for line in _text(text).split("\n"))


def _printf(fmt: Any, *args: Any) -> str:
    if re.search(r"%[^sd%]", str(fmt)):
        raise TemplateError(f"printf {fmt!r}: only %s and %d are supported")
    return str(fmt) % tuple(_text(arg) if isinstance(arg, bool) else arg for arg in args)


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


_FUNCTIONS: dict[str, Any] = {
    "and": _and,
    "or": _or,
    "not": lambda value: not _truth(value),
    "eq": lambda left, right: left == right,
    "default": lambda fallback, value=None: value if _truth(value) else fallback,
    "quote": lambda value: json.dumps(_text(value), ensure_ascii=False),
    "toYaml": _to_yaml,
    "toJson": lambda value: json.dumps(value, separators=(",", ":"), sort_keys=True),
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "indent": _indent,
    "printf": _printf,
}


class _Renderer:
    def __init__(self, defines: dict[str, list[_Node]], root: Mapping[str, Any]) -> None:
        self.defines = defines
        self.root = root

    def render(self, nodes: list[_Node], dot: Any, scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.arg)
            elif node.kind == "out":
                out.append(_text(self.pipeline(node.arg, dot, scope)))
            elif node.kind == "if":
                chosen = node.body if _truth(self.pipeline(node.arg, dot, scope)) else node.orelse
                out.append(self.render(chosen, dot, scope))
            elif node.kind == "with":
                value = self.pipeline(node.arg, dot, scope)
                if _truth(value):
                    out.append(self.render(node.body, value, scope))
                else:
                    out.append(self.render(node.orelse, dot, scope))
            else:
                out.append(self.range(node, dot, scope))
        return "".join(out)

    def range(self, node: _Node, dot: Any, scope: dict[str, Any]) -> str:
        names: list[str] = []
        expression = node.arg
        if ":=" in expression:
            left, expression = expression.split(":=", 1)
            names = [name.strip() for name in left.split(",")]
        value = self.pipeline(expression, dot, scope)
        if node.orelse:
            raise TemplateError("range ... else is outside the supported subset")
        items: Iterator[tuple[Any, Any]]
        if isinstance(value, dict):
            items = ((key, value[key]) for key in sorted(value))
        elif isinstance(value, list):
            items = enumerate(value)
        elif value is None:
            items = iter(())
        else:
            raise TemplateError(f"range over {type(value).__name__}")
        out = []
        for key, item in items:
            inner = dict(scope)
            if len(names) == 2:
                inner[names[0]], inner[names[1]] = key, item
            elif len(names) == 1:
                inner[names[0]] = item
            out.append(self.render(node.body, item, inner))
        return "".join(out)

    def pipeline(self, source: str, dot: Any, scope: dict[str, Any]) -> Any:
        tokens = self.tokens(source)
        value, rest = self.parse_pipeline(tokens, dot, scope)
        if rest:
            raise TemplateError(f"{source!r}: unexpected {rest[0][1]!r}")
        return value

    @staticmethod
    def tokens(source: str) -> list[tuple[str, str]]:
        tokens = []
        position = 0
        source = source.rstrip()
        while position < len(source):
            match = _TOKEN.match(source, position)
            if match is None or match.end() == position:
                raise TemplateError(f"cannot read {source[position:]!r}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            position = match.end()
        return tokens

    def parse_pipeline(
        self, tokens: list[tuple[str, str]], dot: Any, scope: dict[str, Any]
    ) -> tuple[Any, list[tuple[str, str]]]:
        value: Any = None
        piped = False
        while True:
            command: list[tuple[str, str]] = []
            depth = 0
            while tokens and not (depth == 0 and tokens[0][1] in ("|", ")")):
                depth += {"(": 1, ")": -1}.get(tokens[0][1], 0)
                command.append(tokens.pop(0))
            value = self.command(command, dot, scope, [value] if piped else [])
            if tokens and tokens[0][1] == "|":
                tokens.pop(0)
                piped = True
                continue
            return value, tokens

    def command(
        self, tokens: list[tuple[str, str]], dot: Any, scope: dict[str, Any], piped: list[Any]
    ) -> Any:
        if not tokens:
            raise TemplateError("an empty command")
        kind, text = tokens[0]
        if kind == "ident" and text not in ("true", "false", "nil"):
            args = []
            rest = tokens[1:]
            while rest:
                arg, rest = self.operand(rest, dot, scope)
                args.append(arg)
            args += piped
            if text == "include":
                name, context = args
                if name not in self.defines:
                    raise TemplateError(f"include of an undefined template {name!r}")
                return self.render(self.defines[name], context, {"$": self.root})
            if text not in _FUNCTIONS:
                raise TemplateError(f"function {text!r} is outside the supported subset")
            try:
                return _FUNCTIONS[text](*args)
            except TypeError as error:
                raise TemplateError(f"{text}: {error}") from error
        value, rest = self.operand(tokens, dot, scope)
        if rest or piped:
            raise TemplateError("a value cannot take arguments")
        return value

    def operand(
        self, tokens: list[tuple[str, str]], dot: Any, scope: dict[str, Any]
    ) -> tuple[Any, list[tuple[str, str]]]:
        kind, text = tokens[0]
        rest = tokens[1:]
        if text == "(":
            value, rest = self.parse_pipeline(rest, dot, scope)
            if not rest or rest[0][1] != ")":
                raise TemplateError("an unclosed (")
            return value, rest[1:]
        if kind == "str":
            return json.loads(text), rest
        if kind == "num":
            return (float(text) if "." in text else int(text)), rest
        if kind == "ident" and text in ("true", "false"):
            return text == "true", rest
        if kind == "field":
            return self.walk(dot, text), rest
        if kind == "var":
            if text not in scope:
                raise TemplateError(f"undefined variable {text}")
            value = scope[text]
            if rest and rest[0][0] == "field" and rest[0][1] != ".":
                return self.walk(value, rest[0][1]), rest[1:]
            return value, rest
        raise TemplateError(f"unexpected {text!r}")

    @staticmethod
    def walk(value: Any, path: str) -> Any:
        for key in [part for part in path.split(".") if part]:
            if not isinstance(value, Mapping) or key not in value:
                raise TemplateError(f"no value at {path} (missing {key!r})")
            value = value[key]
        return value


def merge(base: Any, overlay: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base.get(key), value)
        return merged
    return overlay


def render_chart(
    chart: Path,
    values_files: list[Path] = (),  # type: ignore[assignment]
    overrides: Mapping[str, Any] | None = None,
    release: str = "idis",
    namespace: str = "default",
) -> list[dict[str, Any]]:
    """Every manifest ``helm template`` would print for ``chart``, parsed, in file order."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    values = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8")) or {}
    for path in values_files:
        values = merge(values, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    values = merge(values, dict(overrides or {}))
    root = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {key[0].upper() + key[1:]: value for key, value in meta.items()},
    }
    templates = sorted((chart / "templates").iterdir())
    defines: dict[str, list[_Node]] = {}
    bodies: list[tuple[Path, list[_Node]]] = []
    for path in templates:
        nodes, found = _parse(_lex(path.read_text(encoding="utf-8")))
        defines.update(found)
        if not path.name.startswith("_"):
            bodies.append((path, nodes))
    renderer = _Renderer(defines, root)
    manifests = []
    for path, nodes in bodies:
        try:
            text = renderer.render(nodes, root, {"$": root})
        except TemplateError as error:
            raise TemplateError(f"{path.name}: {error}") from error
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise TemplateError(f"{path.name} renders invalid YAML: {error}\n{text}") from error
        manifests += [document for document in documents if document]
    return manifests
