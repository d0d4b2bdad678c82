"""A one-regex lexer for the IR grammar, plugged into Lark's LALR parser.

It emits exactly the tokens Lark's contextual lexer would (tests compare the two
on every example and on random programs) at a fraction of the cost. Where one
spelling can be two tokens, it asks the parser which it accepts now: a keyword
such as `param` is an IDENT where no keyword can stand, and inside a dimension
expression `-1` after an operand is the operator `-` then `1` (likewise `%x`).

Hostile text stays cheap: every pattern matches in memory independent of the
token's length (possessive repeats), and brackets nest at most `MAX_NESTING`
deep (`NestingTooDeep`), so nothing downstream recurses without bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from lark import Token
from lark.exceptions import UnexpectedCharacters
from lark.lexer import Lexer, LexerState

_MASTER = re.compile(
    "|".join(
        f"(?P<{name}>{pattern})"
        for name, pattern in (
            ("_NL", r"(?:\r?\n)++"),
            ("WS", r"[ \t]+"),
            ("COMMENT", r"#[^\n]*"),
            ("VALUE", r"%[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*+"),
            ("STATE", r"@[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*+"),
            ("DEVICE", r'device\("[a-z]+(?::[0-9]+)?"\)'),
            ("OPNAME", r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)++"),
            ("IDENT", r"[A-Za-z_][A-Za-z0-9_]*"),
            ("NEGINF", r"-inf"),
            ("FLOAT", r"-?(?:[0-9]+\.[0-9]*(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)"),
            ("INT", r"-?[0-9]+"),
            ("STRING", r'"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"'),
            ("PUNCT", r"->|//|[()\[\],=:+\-*%]"),
        )
    )
)
_STATE_KINDS = frozenset({"param", "buffer", "const"})
_OPENING = frozenset({"(", "["})
_CLOSING = frozenset({")", "]"})
MAX_NESTING = 256


class NestingTooDeep(Exception):
    """Brackets nest deeper than MAX_NESTING at `line`, `column` (the parser reports it located)."""

    def __init__(self, line: int, column: int):
        super().__init__(f"brackets nested deeper than {MAX_NESTING} levels")
        self.line, self.column = line, column


class FastLexer(Lexer):
    """Lark custom lexer (interface 2): `lex(lexer_state, parser_state)` yields Tokens."""

    __future_interface__ = 2

    def __init__(self, lexer_conf: Any):
        self.literal_types = {t.pattern.value: t.name for t in lexer_conf.terminals if t.pattern.type == "str"}

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        text = lexer_state.text.text
        end = len(text)
        pos = 0
        line = 1
        line_start = 0
        states = parser_state.parse_conf.states
        literal_types = self.literal_types
        match = _MASTER.match
        depth = 0
        while pos < end:
            found = match(text, pos)
            if found is None:
                raise UnexpectedCharacters(
                    text, pos, line, pos - line_start + 1, allowed=set(states[parser_state.position]), state=parser_state
                )
            kind = found.lastgroup
            value = found.group()
            column = pos - line_start + 1
            if kind == "WS" or kind == "COMMENT":
                pos = found.end()
                continue
            if kind == "IDENT":
                keyword = literal_types.get(value) or ("STATE_KIND" if value in _STATE_KINDS else None)
                if keyword is not None and keyword in states[parser_state.position]:
                    kind = keyword
            elif kind == "PUNCT":
                if value in _OPENING:
                    depth += 1
                    if depth > MAX_NESTING:
                        raise NestingTooDeep(line, column)
                elif value in _CLOSING:
                    depth -= 1
                kind = literal_types[value]
            elif kind == "NEGINF":
                kind = literal_types["-inf"]
            if kind not in states[parser_state.position]:
                # `-1` or `%x` right after an operand: the operator alone (as Lark's contextual lexer splits it).
                operator = literal_types.get(value[0])
                if operator is not None and operator in states[parser_state.position]:
                    kind, value = operator, value[0]
            token = Token(kind, value, pos, line, column)
            pos += len(value)
            if kind == "_NL":
                line += value.count("\n")
                line_start = pos
            yield token
