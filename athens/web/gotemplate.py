"""
The part of Go's ``html/template`` that a home page needs, so that the
``HomeTemplatePath`` file an Athens operator wrote renders here unchanged.

Supported: ``{{ .Field.Sub }}``, ``{{ . }}``, ``{{ $ }}`` and ``{{ $.Field }}``;
``if`` / ``else if`` / ``else`` / ``end``, ``with`` (and ``else with``), ``range``
(with ``else``) over lists and maps; the functions ``not``, ``and``, ``or``,
``eq``, ``ne`` and ``len``, with parentheses; string, number, ``true``,
``false`` and ``nil`` literals; ``{{/* comments */}}``; the trim markers
``{{-`` and ``-}}``.  Truth is Go's: false, 0, nil and empty are false.  A
missing key is empty, as in Athens' ``map[string]string``.

Every value printed is HTML-escaped, in text and in quoted attributes alike.
Go escapes by context (further inside ``<script>``, ``<style>`` and URL
attributes): do not put values into scripts.  Anything else (pipelines,
``printf``, variables, ``define``) is a :class:`TemplateError` naming its line.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import attrs


class TemplateError(ValueError):
    """The template cannot be parsed or run; the message names the line."""


# -- the tree -----------------------------------------------------------------


@attrs.frozen
class _Field:
    """``.A.B`` (``root`` False) or ``$.A.B`` (True); no names: the dot itself, or ``$``."""

    names: tuple[str, ...]
    root: bool


@attrs.frozen
class _Literal:
    value: Any


@attrs.frozen
class _Call:
    function: str
    args: tuple["_Expr", ...]
    line: int


_Expr = Union[_Field, _Literal, _Call]


@attrs.frozen
class _Text:
    text: str


@attrs.frozen
class _Print:
    expr: _Expr
    line: int


@attrs.frozen
class _Branch:
    """``if``, ``with`` or ``range``: the body when the value is true (or for each item), else ``otherwise``."""

    kind: str
    expr: _Expr
    body: tuple["_Node", ...]
    otherwise: tuple["_Node", ...]
    line: int


_Node = Union[_Text, _Print, _Branch]

# -- lexing ---------------------------------------------------------------------

_SPACE = " \t\r\n"
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<field>\$?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.|\$)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<paren>[()])
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _actions(source: str) -> Iterator[tuple[str, str, int]]:
    """``("text", text, line)`` and ``("action", inside, line)``, trim markers applied, comments dropped."""
    pos, line = 0, 1
    pending_trim = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        # "{{- " trims the space before; "{{-3}}" is the number -3
        trim_left = start >= 0 and source[start + 2:start + 3] == "-" and source[start + 3:start + 4] in tuple(_SPACE)
        if pending_trim:
            text = text.lstrip(_SPACE)
        if trim_left:
            text = text.rstrip(_SPACE)
        if text:
            yield "text", text, line
        if start < 0:
            return
        line += source.count("\n", pos, start)
        inner_start = start + (3 if trim_left else 2)
        end = _action_end(source, inner_start, line)
        inner = source[inner_start:end]
        pending_trim = len(inner) >= 2 and inner[-1] == "-" and inner[-2] in _SPACE
        if pending_trim:
            inner = inner[:-1]
        stripped = inner.strip(_SPACE)
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError(f"line {line}: unclosed comment")
        else:
            yield "action", stripped, line
        line += source.count("\n", start, end + 2)
        pos = end + 2


def _action_end(source: str, pos: int, line: int) -> int:
    """Where the action's ``}}`` is, outside quoted strings."""
    quote = ""
    i = pos
    while i < len(source):
        c = source[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"`":
            quote = c
        elif source.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"line {line}: unclosed action")


def _tokens(text: str, line: int) -> list[tuple[str, str]]:
    found = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise TemplateError(f"line {line}: unexpected {text[pos:pos + 20]!r} in {{{{ {text} }}}}")
        kind = m.lastgroup or ""
        if kind != "space":
            found.append((kind, m.group()))
        pos = m.end()
    return found


# -- parsing ----------------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _function(name: str, arity: tuple[int, int]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.arity = arity  # type: ignore[attr-defined]
        _FUNCTIONS[name] = fn
        return fn
    return register


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], line: int, source: str) -> None:
        self.tokens, self.line, self.source, self.pos = tokens, line, source, 0

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"line {self.line}: {why} in {{{{ {self.source} }}}}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.fail("missing a value")
        self.pos += 1
        return token

    def command(self) -> _Expr:
        """A function with its arguments, or one operand; it must use every token."""
        expr = self._command()
        if self.peek() is not None:
            raise self.fail(f"unsupported {self.peek()[1]!r} (athens-py knows no pipelines or variables)")  # type: ignore[index]
        return expr

    def _command(self) -> _Expr:
        kind, value = self.take()
        if kind == "word" and value in _FUNCTIONS:
            args = []
            while self.peek() is not None and self.peek() != ("paren", ")"):
                args.append(self.operand())
            low, high = _FUNCTIONS[value].arity  # type: ignore[attr-defined]
            if not low <= len(args) <= high:
                raise self.fail(f"wrong number of arguments for {value}")
            return _Call(value, tuple(args), self.line)
        self.pos -= 1
        return self.operand()

    def operand(self) -> _Expr:
        kind, value = self.take()
        if kind == "paren" and value == "(":
            expr = self._command()
            if self.take() != ("paren", ")"):
                raise self.fail("missing )")
            return expr
        if kind == "field":
            root = value.startswith("$")
            names = tuple(n for n in value.lstrip("$").split(".") if n)
            return _Field(names, root)
        if kind == "string":
            return _Literal(re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), value[1:-1]))
        if kind == "raw":
            return _Literal(value[1:-1])
        if kind == "number":
            return _Literal(float(value) if "." in value else int(value))
        if kind == "word" and value in ("true", "false", "nil"):
            return _Literal({"true": True, "false": False, "nil": None}[value])
        if kind == "word" and value in _FUNCTIONS:
            raise self.fail(f"{value} needs parentheses here")
        raise self.fail(f"unsupported {value!r}")


def _expression(text: str, line: int) -> _Expr:
    return _Parser(_tokens(text, line), line, text).command()


_KEYWORD = re.compile(r"^(if|with|range|else|end|define|template|block|break|continue)\b\s*(.*)$", re.DOTALL)


def _parse(items: list[tuple[str, str, int]], pos: int, closing: bool) -> tuple[tuple[_Node, ...], int, str, int]:
    """Nodes up to an ``else``/``end`` (when ``closing``); returns them, where it stopped, and what stopped it."""
    nodes: list[_Node] = []
    while pos < len(items):
        kind, text, line = items[pos]
        pos += 1
        if kind == "text":
            nodes.append(_Text(text))
            continue
        m = _KEYWORD.match(text)
        if not m:
            nodes.append(_Print(_expression(text, line), line))
            continue
        keyword, rest = m.groups()
        if keyword in ("else", "end"):
            if not closing:
                raise TemplateError(f"line {line}: unexpected {{{{ {keyword} }}}}")
            return tuple(nodes), pos, text, line
        if keyword not in ("if", "with", "range"):
            raise TemplateError(f"line {line}: {{{{ {keyword} }}}} is not supported by athens-py's home templates")
        node, pos = _branch(keyword, rest, line, items, pos)
        nodes.append(node)
    if closing:
        raise TemplateError("the template ends before an {{ end }}")
    return tuple(nodes), pos, "", 0


def _branch(keyword: str, rest: str, line: int, items: list[tuple[str, str, int]], pos: int) -> tuple[_Branch, int]:
    if not rest.strip():
        raise TemplateError(f"line {line}: {{{{ {keyword} }}}} needs a value")
    expr = _expression(rest, line)
    body, pos, stop, stop_line = _parse(items, pos, closing=True)
    otherwise: tuple[_Node, ...] = ()
    if stop.startswith("else"):
        chained = stop[4:].strip()
        if chained:  # {{ else if x }} / {{ else with x }}: a nested branch sharing this one's {{ end }}
            m = re.match(r"^(if|with)\b\s*(.*)$", chained, re.DOTALL)
            if not m:
                raise TemplateError(f"line {stop_line}: unsupported {{{{ {stop} }}}}")
            nested, pos = _branch(m.group(1), m.group(2), stop_line, items, pos)
            otherwise = (nested,)
        else:
            otherwise, pos, stop, stop_line = _parse(items, pos, closing=True)
            if stop != "end":
                raise TemplateError(f"line {stop_line}: expected {{{{ end }}}}, found {{{{ {stop} }}}}")
    elif stop != "end":
        raise TemplateError(f"line {stop_line}: unsupported {{{{ {stop} }}}}")
    return _Branch(keyword, expr, body, otherwise, line), pos


# -- running ----------------------------------------------------------------------


def truth(value: Any) -> bool:
    """Go's: false, zero, nil and empty strings, lists and maps are false."""
    return bool(value) if value is not None else False


@_function("not", (1, 1))
def _not(a: Any) -> bool:
    return not truth(a)


@_function("and", (1, 99))
def _and(*args: Any) -> Any:
    for a in args:
        if not truth(a):
            return a
    return args[-1]


@_function("or", (1, 99))
def _or(*args: Any) -> Any:
    for a in args:
        if truth(a):
            return a
    return args[-1]


@_function("eq", (2, 99))
def _eq(a: Any, *others: Any) -> bool:
    return any(a == b for b in others)


@_function("ne", (2, 2))
def _ne(a: Any, b: Any) -> bool:
    return bool(a != b)


@_function("len", (1, 1))
def _len(a: Any) -> int:
    if not isinstance(a, (str, list, tuple, dict)):
        raise TemplateError(f"len of {type(a).__name__}")
    return len(a)


#: html/template's escapes for text and quoted attributes, byte for byte.
_GO_ESCAPES = str.maketrans({"\0": "\ufffd", '"': "&#34;", "&": "&amp;", "'": "&#39;", "+": "&#43;", "<": "&lt;",
                             ">": "&gt;"})


def escape(text: str) -> str:
    """As Go's html/template escapes a value in HTML text or a quoted attribute."""
    return text.translate(_GO_ESCAPES)


def _printed(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_printed(v) for v in value) + "]"
    return str(value)


@attrs.frozen
class Template:
    """A parsed template; :meth:`render` it as often as needed."""

    nodes: tuple[_Node, ...]

    def render(self, data: Mapping[str, Any]) -> str:
        out: list[str] = []
        self._run(self.nodes, data, data, out)
        return "".join(out)

    def _run(self, nodes: Sequence[_Node], dot: Any, root: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Print):
                out.append(escape(_printed(_evaluate(node.expr, dot, root, node.line))))
            else:
                self._branch(node, dot, root, out)

    def _branch(self, node: _Branch, dot: Any, root: Any, out: list[str]) -> None:
        value = _evaluate(node.expr, dot, root, node.line)
        if node.kind == "range":
            if isinstance(value, Mapping):
                items = [value[k] for k in sorted(value)]
            elif isinstance(value, (list, tuple)) or value is None:
                items = list(value or ())
            else:
                raise TemplateError(f"line {node.line}: range over {type(value).__name__}")
            for item in items:
                self._run(node.body, item, root, out)
            if not items:
                self._run(node.otherwise, dot, root, out)
        elif truth(value):
            self._run(node.body, value if node.kind == "with" else dot, root, out)
        else:
            self._run(node.otherwise, dot, root, out)


def _evaluate(expr: _Expr, dot: Any, root: Any, line: int) -> Any:
    if isinstance(expr, _Literal):
        return expr.value
    if isinstance(expr, _Field):
        value = root if expr.root else dot
        for name in expr.names:
            if value is None:
                return None
            if not isinstance(value, Mapping):
                raise TemplateError(f"line {line}: can't evaluate field {name} in {type(value).__name__}")
            value = value.get(name)
        return value
    args = [_evaluate(a, dot, root, line) for a in expr.args]
    try:
        return _FUNCTIONS[expr.function](*args)
    except TemplateError as e:
        raise TemplateError(f"line {line}: {e}") from None
    except TypeError as e:
        raise TemplateError(f"line {line}: {expr.function}: {e}") from None


def parse(source: str) -> Template:
    """Parse a template; a :class:`TemplateError` names the line of what is wrong or unsupported."""
    nodes, _, _, _ = _parse(list(_actions(source)), 0, closing=False)
    return Template(nodes)
