"""
HCL's native syntax, as far as a file decoded with no variables and no
functions can use it (Athens decodes its download file so: ``gohcl.DecodeBody``
with no evaluation context): attributes and labelled blocks, every comment
form, quoted templates with escapes and ``${...}`` interpolation, heredocs
(``<<EOT`` and the indented ``<<-EOT``), and constant expressions (numbers,
``true``/``false``/``null``, arithmetic, comparisons, ``&&``/``||``/``!``,
``cond ? a : b``, parentheses).

Every node keeps its line, so the caller's errors name one. Why not
python-hcl2: see the README ("Libraries, and where we kept our own code").
"""

from __future__ import annotations

import re
from typing import Any, Callable

import attrs


class HCLError(ValueError):
    """The text is not HCL this reader takes; the message starts with ``line N:``."""


@attrs.frozen
class Attribute:
    name: str
    value: Any  # str, float, int, bool or None
    line: int


@attrs.frozen
class Block:
    kind: str
    labels: tuple[str, ...]
    body: "Body"
    line: int


@attrs.frozen
class Body:
    attributes: tuple[Attribute, ...]
    blocks: tuple[Block, ...]


_SPACE = re.compile(r"(?:[ \t\r\n]+|#[^\n]*|//[^\n]*|/\*.*?\*/)+", re.DOTALL)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_SYMBOLS = ("==", "!=", "<=", ">=", "&&", "||", "=", "{", "}", "(", ")", "?", ":", "!", "-", "+", "*", "/", "%",
            "<", ">", "[", "]", ",", ".")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


@attrs.frozen
class _Token:
    kind: str  # "ident", "number", "template", "symbol", "end"
    value: Any
    line: int


def parse(text: str) -> Body:
    """The body of an HCL file; HCLError names the line of the first mistake."""
    return _Parser(_Lexer(text).tokens(stop=None)).body(closing=False)


class _Lexer:
    def __init__(self, text: str, pos: int = 0, first_line: int = 1) -> None:
        self.text, self.pos, self.first_line = text, pos, first_line

    def line(self, pos: int | None = None) -> int:
        return self.first_line + self.text.count("\n", 0, self.pos if pos is None else pos)

    def fail(self, message: str, pos: int | None = None) -> HCLError:
        return HCLError(f"line {self.line(pos)}: {message}")

    def tokens(self, stop: str | None, opened: int = 0) -> list[_Token]:
        """Up to the end, or (inside the ``${`` at ``opened``) up to the ``}`` that closes it, which is consumed."""
        out: list[_Token] = []
        depth = 0
        while True:
            m = _SPACE.match(self.text, self.pos)
            if m:
                self.pos = m.end()
            if self.pos >= len(self.text):
                if stop is not None:
                    raise self.fail("an interpolation ${...} is not closed", opened)
                out.append(_Token("end", None, self.line()))
                return out
            line, c = self.line(), self.text[self.pos]
            if stop is not None and c == "}" and depth == 0:
                self.pos += 1
                out.append(_Token("end", None, line))
                return out
            if c == '"':
                self.pos += 1
                out.append(_Token("template", self.template(quoted=True), line))
            elif self.text.startswith("<<", self.pos) and (m := _HEREDOC.match(self.text, self.pos)):
                self.pos = m.end()
                out.append(_Token("template", self.heredoc(m.group(2), bool(m.group(1)), line), line))
            elif m := _NUMBER.match(self.text, self.pos):
                self.pos = m.end()
                out.append(_Token("number", float(m.group()) if set(".eE") & set(m.group()) else int(m.group()), line))
            elif m := _IDENT.match(self.text, self.pos):
                self.pos = m.end()
                out.append(_Token("ident", m.group(), line))
            else:
                symbol = next((s for s in _SYMBOLS if self.text.startswith(s, self.pos)), None)
                if symbol is None:
                    raise self.fail(f"unexpected {self.text[self.pos:self.pos + 20]!r}")
                depth += {"{": 1, "}": -1}.get(symbol, 0)
                self.pos += len(symbol)
                out.append(_Token("symbol", symbol, line))

    def template(self, quoted: bool) -> list[Any]:
        """
        Literal text and interpolations (token lists): a quoted string up to its closing quote
        (escapes apply; it may not span lines), or a heredoc's whole text (no escapes, as in HCL).
        """
        parts: list[Any] = []
        literal: list[str] = []
        start = self.pos
        while True:
            if self.pos >= len(self.text) or (quoted and self.text[self.pos] == "\n"):
                if quoted:
                    raise self.fail("a quoted string is not closed on its line", start)
                return parts + ["".join(literal)]
            c = self.text[self.pos]
            if quoted and c == '"':
                self.pos += 1
                return parts + ["".join(literal)]
            if quoted and c == "\\":
                literal.append(self.escape())
            elif self.text.startswith(("$${", "%%{"), self.pos):
                literal.append(self.text[self.pos + 1:self.pos + 3])
                self.pos += 3
            elif self.text.startswith("${", self.pos):
                self.pos += 2
                parts += ["".join(literal), self.tokens(stop="}", opened=self.pos - 2)]
                literal = []
            elif self.text.startswith("%{", self.pos):
                raise self.fail("template directives (%{if}, %{for}) are not supported here")
            else:
                literal.append(c)
                self.pos += 1

    def escape(self) -> str:
        code = self.text[self.pos + 1:self.pos + 2]
        if code in _ESCAPES:
            self.pos += 2
            return _ESCAPES[code]
        width = {"u": 4, "U": 8}.get(code, 0)
        digits = self.text[self.pos + 2:self.pos + 2 + width]
        if not width or len(digits) != width or not re.fullmatch(r"[0-9A-Fa-f]+", digits) or \
                int(digits, 16) > 0x10FFFF or 0xD800 <= int(digits, 16) < 0xE000:
            raise self.fail(f"invalid escape {self.text[self.pos:self.pos + 10]!r} in a quoted string")
        self.pos += 2 + width
        return chr(int(digits, 16))

    def heredoc(self, marker: str, indented: bool, opened: int) -> list[Any]:
        """Lines up to the one holding only ``marker``; ``<<-`` removes the indent they share."""
        first_line = self.line()
        lines: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise HCLError(f"line {opened}: heredoc <<{marker} is not closed")
            end = self.text.find("\n", self.pos)
            end = len(self.text) if end < 0 else end
            raw = self.text[self.pos:end]
            if raw.strip() == marker:
                self.pos = end
                break
            lines.append(raw + "\n")
            self.pos = min(end + 1, len(self.text))
        if indented:
            indent = min((len(raw) - len(raw.lstrip(" \t")) for raw in lines if raw.strip()), default=0)
            lines = [raw[indent:] if raw.strip() else raw.lstrip(" \t") for raw in lines]
        return _Lexer("".join(lines), 0, first_line).template(quoted=False)


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: _Token, message: str) -> HCLError:
        return HCLError(f"line {token.line}: {message}")

    def expect(self, symbol: str, what: str) -> _Token:
        token = self.take()
        if token.kind != "symbol" or token.value != symbol:
            raise self.fail(token, f"expected {what}, found {_show(token)}")
        return token

    def body(self, closing: bool) -> Body:
        attributes: list[Attribute] = []
        blocks: list[Block] = []
        while True:
            token = self.peek()
            if token.kind == "end" and not closing:
                return Body(tuple(attributes), tuple(blocks))
            if closing and token.kind == "symbol" and token.value == "}":
                self.take()
                return Body(tuple(attributes), tuple(blocks))
            if token.kind == "end":
                raise self.fail(token, "unexpected end of the file: a block is not closed with }")
            if token.kind != "ident":
                raise self.fail(token, f"expected a name, found {_show(token)}")
            self.take()
            following = self.peek()
            if following.kind == "symbol" and following.value == "=":
                self.take()
                attributes.append(Attribute(token.value, self.expression(), token.line))
                continue
            labels = []
            while self.peek().kind in ("template", "ident") and self.peek().line == token.line:
                label = self.take()
                labels.append(label.value if label.kind == "ident" else _render(label, self))
            self.expect("{", f"= or a block's {{ after {token.value!r}")
            blocks.append(Block(token.value, tuple(labels), self.body(closing=True), token.line))

    # --- expressions, in HCL's precedence ------------------------------------------------

    def expression(self) -> Any:
        condition = self.binary(0)
        if self.peek().kind == "symbol" and self.peek().value == "?":
            at = self.take()
            yes = self.expression()
            self.expect(":", "the : of a conditional")
            no = self.expression()
            if not isinstance(condition, bool):
                raise self.fail(at, "the condition of ? : must be true or false")
            return yes if condition else no
        return condition

    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"),
                                           ("*", "/", "%"))

    def binary(self, level: int) -> Any:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek().kind == "symbol" and self.peek().value in self._LEVELS[level]:
            op = self.take()
            left = _apply(op, left, self.binary(level + 1), self)
        return left

    def unary(self) -> Any:
        token = self.peek()
        if token.kind == "symbol" and token.value in ("-", "!"):
            self.take()
            value = self.unary()
            if token.value == "-" and _is_number(value):
                return -value
            if token.value == "!" and isinstance(value, bool):
                return not value
            raise self.fail(token, f"{token.value} does not apply to {_kind(value)}")
        return self.primary()

    def primary(self) -> Any:
        token = self.take()
        if token.kind == "number":
            return token.value
        if token.kind == "template":
            return _render(token, self)
        if token.kind == "ident":
            if token.value in ("true", "false"):
                return token.value == "true"
            if token.value == "null":
                return None
            if self.peek().kind == "symbol" and self.peek().value == "(":
                raise self.fail(token, f"function calls ({token.value}(...)) are not allowed here")
            raise self.fail(token, f"variables ({token.value}) are not allowed here: quote a string value")
        if token.kind == "symbol" and token.value == "(":
            value = self.expression()
            self.expect(")", "a closing )")
            return value
        if token.kind == "symbol" and token.value in ("[", "{"):
            raise self.fail(token, "lists and objects are not values here")
        raise self.fail(token, f"expected a value, found {_show(token)}")


def _render(token: _Token, parser: _Parser) -> str:
    out = []
    for part in token.value:
        if isinstance(part, str):
            out.append(part)
            continue
        inner = _Parser(part)
        value = inner.expression()
        if inner.peek().kind != "end":
            raise inner.fail(inner.peek(), f"unexpected {_show(inner.peek())} in an interpolation")
        if value is None:
            raise parser.fail(token, "null cannot be put in a string")
        out.append(_text(value))
    return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "a number" if _is_number(value) else "true or false" if isinstance(value, bool) else \
        "null" if value is None else "a string"


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
    "%": lambda a, b: a % b, "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _apply(op: _Token, left: Any, right: Any, parser: _Parser) -> Any:
    symbol = op.value
    if symbol in ("==", "!="):
        return (left == right and type(left) is type(right)) == (symbol == "==")
    if symbol in ("&&", "||"):
        if not isinstance(left, bool) or not isinstance(right, bool):
            raise parser.fail(op, f"{symbol} needs true or false on both sides")
        return (left and right) if symbol == "&&" else (left or right)
    if not _is_number(left) or not _is_number(right):
        raise parser.fail(op, f"{symbol} needs numbers, not {_kind(left)} and {_kind(right)}")
    if symbol in ("/", "%") and right == 0:
        raise parser.fail(op, "division by zero")
    return _ARITHMETIC[symbol](left, right)


def _show(token: _Token) -> str:
    if token.kind == "end":
        return "the end"
    if token.kind == "template":
        return "a string"
    return repr(str(token.value))
