"""Text -> Program: the Lark LALR parser of `grammar/bwsk.lark`, then the verifier.

Every error is a `ParseError` (or `VerifyError`) located at FILE:LINE:COL with a
one-line message. Parsing runs in one pass: the transformer is inlined into the
LALR parser, so no parse tree is built.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import threading
from collections.abc import Callable, Iterator
from importlib import resources

import torch
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from bwsk.errors import DimensionError, Location, ParseError, quoted
from bwsk.ir import ops
from bwsk.ir.dims import MAX_MAGNITUDE, Binary, Dim, evaluate_dim, negate, symbols, value_of
from bwsk.ir.lexer import MAX_NESTING, FastLexer, NestingTooDeep
from bwsk.ir.literals import MAX_INT_DIGITS, NAMED_LITERALS
from bwsk.ir.program import Definition, Input, Output, Program, State
from bwsk.ir.terms import COMBINATOR_ARITY, HOLE, App, Comb, ListArg, Lit, Prim, Ref, Term
from bwsk.ir.types import DTYPES_BY_NAME, SCALAR_KINDS, FunctionType, ScalarType, TensorType, TupleType

_TERMINAL_NAMES = {
    "VALUE": "a %name",
    "STATE": "an @name",
    "OPNAME": "an operator",
    "IDENT": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "NEGINF": "-inf",
    "STRING": "a string",
    "DEVICE": 'device("...")',
    "STATE_KIND": "param, buffer or const",
    "_NL": "end of line",
    "$END": "end of file",
}


class _Bare:
    """An identifier whose meaning depends on where it stands (combinator or literal)."""

    __slots__ = ("token",)

    def __init__(self, token: Token):
        self.token = token


class _Keyword:
    __slots__ = ("name", "value")

    def __init__(self, name: Token, value: object):
        self.name, self.value = name, value


class _Builder(Transformer):
    """Inline LALR callbacks; one instance is reused (under a lock) with `reset` per parse."""

    def reset(self, filename: str) -> None:
        self.filename = filename
        self.header: tuple[str, tuple[tuple[str, str], ...]] | None = None
        self.inputs: list[Input] = []
        self.state: list[State] = []
        self.defs: list[Definition] = []
        self.outputs: list[Output] = []
        self.spans: dict[tuple, Location] = {}
        self.pending: list[tuple[Term, Location]] = []
        self.first_statement: Location | None = None
        self.spines: dict[Term, int] = {}  # number of arguments of each application built

    # ---- helpers ----
    def at(self, token: Token) -> Location:
        return Location(self.filename, token.line, token.column)

    def fail(self, token: Token, message: str) -> ParseError:
        return ParseError(message, self.at(token))

    def string(self, token: Token) -> str:
        try:
            return json.loads(token)
        except json.JSONDecodeError as error:
            raise self.fail(token, f"malformed string {quoted(token)} ({error.msg.removesuffix(' at')})") from None

    def integer(self, token: Token) -> int:
        digits = len(token) - token.startswith("-")
        if digits > MAX_INT_DIGITS:
            raise self.fail(token, f"integer literal of {digits} digits (at most {MAX_INT_DIGITS})")
        return int(token)

    def size(self, token: Token) -> int:
        """A literal inside a dimension: an integer of magnitude at most 2**62."""
        if len(token) > 20 or abs(int(token)) > MAX_MAGNITUDE:
            raise self.fail(token, f"dimension {quoted(token)} is beyond 2**62")
        return int(token)

    def dimension(self, token: Token, make: Callable[[], Dim]) -> Dim:
        """`make()`, with a DimensionError located at `token`."""
        try:
            return make()
        except DimensionError as error:
            raise ParseError(error.message, self.at(token)) from None

    def note(self, node: Term, token: Token) -> Term:
        self.pending.append((node, self.at(token)))
        return node

    def statement(self, token: Token, *, is_header: bool = False) -> None:
        """Note the first statement; anything but the header there is an error at the start of its line."""
        if self.first_statement is None:
            self.first_statement = Location(self.filename, token.line, 1)
            if not is_header:
                raise ParseError("a program starts with its header (expected 'program \"NAME\"')", self.first_statement)

    def term(self, value: object) -> Term:
        if isinstance(value, _Bare):
            name = value.token
            if name not in COMBINATOR_ARITY:
                known = ", ".join(COMBINATOR_ARITY)
                raise self.fail(name, f"unknown combinator {quoted(name)} (expected one of {known})")
            return self.note(Comb(str(name)), name)
        return value

    def argument(self, value: object) -> object:
        if isinstance(value, _Bare):
            name = str(value.token)
            if name in NAMED_LITERALS:
                return Lit(NAMED_LITERALS[name])
            if name not in COMBINATOR_ARITY:
                raise self.fail(value.token, f"unknown name {quoted(name)} (expected a literal such as f32, true, none, or a combinator)")
        return self.term(value)

    # ---- terms ----
    def value_ref(self, children: list) -> Term:
        token = children[0]
        return self.note(Ref("value", token[1:]), token)

    def state_ref(self, children: list) -> Term:
        token = children[0]
        return self.note(Ref("state", token[1:]), token)

    def bare_name(self, children: list) -> _Bare:
        return _Bare(children[0])

    def application(self, children: list) -> Term:
        """`f a`; a spine `f a1 ... an` takes at most MAX_NESTING arguments (it nests n applications)."""
        function, argument = self.term(children[0]), self.term(children[1])
        length = self.spines.get(function, 0) + 1
        if length > MAX_NESTING:
            raise ParseError(f"an application to more than {MAX_NESTING} arguments", self.pending[-1][1])
        node = App(function, argument)
        self.spines[node] = length
        return node

    def hole(self, children: list) -> object:
        return HOLE

    def keyword(self, children: list) -> _Keyword:
        return _Keyword(children[0], self.argument(children[1]))

    def prim(self, children: list) -> Term:
        name, *arguments = children
        if ops.resolve(name) is None:
            raise self.fail(name, f"unknown operator {quoted(name)} (expected an aten or prims overload such as aten.add.Tensor)")
        args: list = []
        kwargs: list = []
        for argument in arguments:
            if argument is None:
                continue
            if isinstance(argument, _Keyword):
                kwargs.append((str(argument.name), argument.value))
            elif kwargs:
                raise self.fail(name, f"{name}: a positional argument follows a keyword argument")
            else:
                args.append(self.argument(argument))
        op = ops.canonical_name(str(name))
        problem = ops.signature(op).accepts(len(args), tuple(k for k, _ in kwargs))
        if problem:
            raise self.fail(name, f"{op} {problem}")
        return self.note(Prim(op, tuple(args), tuple(kwargs)), name)

    def int_lit(self, children: list) -> Lit:
        return Lit(self.integer(children[0]))

    def float_lit(self, children: list) -> Lit:
        return Lit(float(children[0]))

    def neginf_lit(self, children: list) -> Lit:
        return Lit(-math.inf)

    def string_lit(self, children: list) -> Lit:
        return Lit(self.string(children[0]))

    def device_lit(self, children: list) -> Lit:
        token = children[0]
        try:
            return Lit(torch.device(token[len('device("') : -2]))
        except RuntimeError:
            raise self.fail(token, f'unknown device {quoted(token)} (expected e.g. device("cpu") or device("cuda:0"))') from None

    def list_lit(self, children: list) -> ListArg:
        items = []
        for child in children:
            if child is None:
                continue
            if isinstance(child, _Keyword):
                raise self.fail(child.name, "a list holds no keyword arguments")
            items.append(self.argument(child))
        return ListArg(tuple(items))

    # ---- types ----
    def scalar_type(self, children: list) -> ScalarType:
        token = children[0]
        if token not in SCALAR_KINDS:
            raise self.fail(
                token,
                f"unknown type {quoted(token)} (expected int, float, bool, a tensor type such as f32[2, 3], a tuple or fn(...) -> ...)",
            )
        return ScalarType(str(token))

    def tensor_type(self, children: list) -> TensorType:
        token, *dims = children
        if token not in DTYPES_BY_NAME:
            raise self.fail(token, f"unknown dtype {quoted(token)} (expected one of {', '.join(DTYPES_BY_NAME)})")
        return TensorType(DTYPES_BY_NAME[token], tuple(d for d in dims if d is not None))

    def tuple_type(self, children: list) -> TupleType:
        return TupleType(tuple(c for c in children if c is not None))

    def function_type(self, children: list) -> FunctionType:
        *params, result = children
        return FunctionType(tuple(p for p in params if p is not None), result)

    def static_dim(self, children: list) -> int:
        token = children[0]
        if token.startswith("-"):
            raise self.fail(token, f"negative dimension {quoted(token)} (a size is at least 0)")
        return self.size(token)

    def symbolic_dim(self, children: list) -> str:
        return str(children[0])

    def expression_dim(self, children: list) -> Dim:
        """A parenthesised dimension; one without symbols must be a size, checked here."""
        paren, dim = children
        if not symbols(dim):
            self.dimension(paren, lambda: evaluate_dim(dim, {}))
        return dim

    def dim_literal(self, children: list) -> int:
        return self.size(children[0])

    def dim_binary(self, children: list) -> Dim:
        """`left op right`; a constant part is evaluated here, so its overflow or division by zero is located at `op`."""
        left, op, right = children
        dim = self.dimension(op, lambda: Binary(str(op), left, right))
        if not symbols(dim):
            self.dimension(op, lambda: value_of(dim, {}))
        elif op in ("//", "%") and not symbols(right) and value_of(right, {}) == 0:
            raise self.fail(op, f"dimension {dim} divides by zero")
        return dim

    def dim_negative(self, children: list) -> Dim:
        minus, operand = children
        return self.dimension(minus, lambda: negate(operand))

    # ---- statements ----
    def program_decl(self, children: list) -> None:
        token, *attributes = children
        if self.header is not None:
            raise self.fail(token, "a second program header (expected one per file)")
        self.statement(token, is_header=True)
        keys = set()
        for key, _ in attributes:
            if key in keys:
                raise self.fail(key, f"attribute {str(key)!r} given twice")
            keys.add(key)
        self.header = (self.string(token), tuple((str(k), self.string(v)) for k, v in attributes))

    def attribute(self, children: list) -> tuple[Token, Token]:
        return children[0], children[1]

    def input_decl(self, children: list) -> None:
        token, type_ = children
        self.statement(token)
        self.spans[("input", token[1:])] = self.at(token)
        self.inputs.append(Input(token[1:], type_))

    def state_decl(self, children: list) -> None:
        kind, token, type_ = children
        self.statement(kind)
        self.spans[("state", token[1:])] = self.at(token)
        self.state.append(State(token[1:], str(kind), type_))

    def module(self, children: list) -> str:
        return self.string(children[0])

    def definition(self, children: list) -> None:
        token, type_, term, module = children
        self.statement(token)
        name = token[1:]
        term = self.term(term)
        if ("def", name) not in self.spans:
            self.spans[("def", name)] = self.at(token)
        else:
            self.spans[("redef", name, len(self.defs))] = self.at(token)
        for node, location in self.pending:
            self.spans.setdefault(("node", name, node), location)
        self.pending.clear()
        self.defs.append(Definition(name, term, type_, module))

    def output_item(self, children: list) -> tuple[Term, object, Location]:
        ref, type_ = children
        ((_, location),) = self.pending
        self.pending.clear()
        return ref, type_, location

    def output_decl(self, children: list) -> None:
        for ref, type_, location in children:
            self.spans[("output", len(self.outputs))] = location
            self.outputs.append(Output(ref, type_))
        if self.first_statement is None:
            raise ParseError("a program starts with its header (expected 'program \"NAME\"')", children[0][2])

    def start(self, children: list) -> Program:
        if self.header is None:
            raise ParseError("empty program (expected a 'program \"NAME\"' header)", Location(self.filename, 1, 1))
        name, attrs = self.header
        return Program(
            name=name,
            inputs=tuple(self.inputs),
            state=tuple(self.state),
            defs=tuple(self.defs),
            outputs=tuple(self.outputs),
            attrs=attrs,
            spans=dict(self.spans),
        )


@functools.cache
def _parser() -> tuple[Lark, _Builder]:
    grammar = resources.files("bwsk.grammar").joinpath("bwsk.lark").read_text()
    builder = _Builder()
    # Collision-freedom is a property of the grammar, checked once by the tests under strict=True
    # (which needs the dev-only `interegular`); the runtime parser builds the same LALR tables.
    lark = Lark(grammar, parser="lalr", lexer=FastLexer, maybe_placeholders=True, transformer=builder)
    return lark, builder


_LOCK = threading.Lock()


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Parsing allocates many acyclic objects; cyclic collections would make it superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def grammar_parser(**options: object) -> Lark:
    """A fresh Lark parser of the grammar (tree-building), e.g. to check it loads under `strict=True`."""
    grammar = resources.files("bwsk.grammar").joinpath("bwsk.lark").read_text()
    return Lark(grammar, parser="lalr", **options)


def _describe(lark: Lark, name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = lark.get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _end_of(text: str, filename: str) -> Location:
    line = text.count("\n") + 1
    return Location(filename, line, len(text) - (text.rfind("\n") + 1) + 1)


def _syntax_error(lark: Lark, error: UnexpectedInput, text: str, filename: str) -> ParseError:
    expected = sorted({_describe(lark, name) for name in getattr(error, "expected", None) or getattr(error, "allowed", ())})
    hint = f"expected {', '.join(expected[:8])}{', ...' if len(expected) > 8 else ''}" if expected else None
    if isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream]
        return ParseError(f"unexpected character {char!r}", Location(filename, error.line, error.column), hint)
    token = getattr(error, "token", None)
    if isinstance(error, UnexpectedEOF) or token is None or token.type == "$END":
        return ParseError("unexpected end of file", _end_of(text, filename), hint)
    what = "end of line" if token.type == "_NL" else quoted(str(token))
    return ParseError(f"unexpected {what}", Location(filename, token.line, token.column), hint)


def parse(text: str, filename: str = "<string>", *, verify: bool = True) -> Program:
    """Parse IR text into a Program (verified unless `verify=False`)."""
    lark, builder = _parser()
    with _LOCK, _no_cyclic_gc():
        builder.reset(filename)
        try:
            program = lark.parse(text)
        except UnexpectedInput as error:
            raise _syntax_error(lark, error, text, filename) from None
        except NestingTooDeep as error:
            raise ParseError(str(error), Location(filename, error.line, error.column)) from None
    if verify:
        from bwsk.ir.verifier import verify as run_verifier

        run_verifier(program)
    return program


def decode(data: bytes, filename: str) -> str:
    """Bytes as UTF-8 text; a binary file is a ParseError at its first undecodable byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8", errors="replace")
        location = _end_of(before, filename)
        raise ParseError(f"not UTF-8 text: byte 0x{data[error.start]:02x} (is this a binary file?)", location) from None
    if "\x00" in text:
        location = _end_of(text[: text.index("\x00")], filename)
        raise ParseError("not text: NUL byte (is this a binary file?)", location)
    return text


def parse_file(path: str) -> Program:
    """Read and parse an IR file; errors name the file."""
    with open(path, "rb") as handle:
        data = handle.read()
    return parse(decode(data, path), path)
