"""Text <-> Program round trips, on random well-formed programs, the examples and the docs.

Also: the grammar loads under lark's strict mode, and the fast lexer emits exactly the tokens
of Lark's own contextual lexer.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark, Token
from paths import ROOT
from strategies import programs

from bwsk.ir.lexer import FastLexer
from bwsk.ir.parser import grammar_parser, parse
from bwsk.ir.printer import print_program
from bwsk.ir.program import Definition, Input, Program
from bwsk.ir.terms import HOLE, Prim
from bwsk.ir.types import TensorType
from bwsk.ir.verifier import verify

EXAMPLES = sorted((ROOT / "grammar" / "examples").glob("*.bwsk"))
DOCS = ROOT / "docs" / "ir.md"


@pytest.fixture(scope="module")
def lexers() -> tuple[Lark, Lark]:
    """Two tree-building parsers of the grammar, keeping every token: fast lexer, Lark's contextual lexer."""
    return (
        grammar_parser(lexer=FastLexer, keep_all_tokens=True),
        grammar_parser(lexer="contextual", keep_all_tokens=True),
    )


def tokens(parser: Lark, text: str) -> list[tuple[str, str, int, int]]:
    tree = parser.parse(text)
    return [(t.type, str(t), t.line, t.column) for t in tree.scan_values(lambda v: isinstance(v, Token))]


def assert_same_tokens(lexers: tuple[Lark, Lark], text: str) -> None:
    fast, contextual = lexers
    expected = tokens(contextual, text)
    assert tokens(fast, text) == expected
    assert len(expected) > 0


def noisy(text: str, data: st.DataObject) -> str:
    """The same program with comments, blank lines, indentation and CRLF line ends added."""
    lines = []
    for line in text.splitlines():
        if data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from(["# a comment line", "", "   \t", "#"])))
        indent = data.draw(st.sampled_from(["", " ", "\t  "]))
        comment = data.draw(st.sampled_from(["", "  # trailing comment", "\t#x", " # %y = S K K"])) if line else ""
        lines.append(indent + line + comment)
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    return "# leading comment\n\n" + newline.join(lines) + newline * data.draw(st.integers(0, 2))


# ---- random programs -------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(programs())
def test_generated_program_round_trips(program: Program) -> None:
    verify(program)
    text = print_program(program)
    parsed = parse(text, "gen.bwsk")
    assert parsed == program
    assert print_program(parsed) == text
    for definition in program.defs:
        assert parsed.definition(definition.name).term is definition.term  # hash-consed: the very same node


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(programs(), st.data())
def test_generated_program_ignores_comments_blank_lines_and_crlf(program: Program, data: st.DataObject) -> None:
    text = noisy(print_program(program), data)
    assert parse(text) == program


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(programs(), st.data())
def test_fast_lexer_matches_lark_contextual_lexer_on_generated_programs(lexers, program: Program, data: st.DataObject) -> None:
    text = print_program(program)
    assert_same_tokens(lexers, text)
    assert_same_tokens(lexers, noisy(text, data))


# ---- literals --------------------------------------------------------------------------------

LITERALS = [
    (0, "0"),
    (-7, "-7"),
    (2**80, "1208925819614629174706176"),
    (1.0, "1.0"),
    (-0.0, "-0.0"),
    (1e-05, "1e-05"),
    (5e-324, "5e-324"),
    (1e300, "1e+300"),
    (math.inf, "inf"),
    (-math.inf, "-inf"),
    (math.nan, "nan"),
    (True, "true"),
    (False, "false"),
    (None, "none"),
    ("", '""'),
    ('quote " backslash \\ newline \n tab \t', r'"quote \" backslash \\ newline \n tab \t"'),
    ("é 😀 \x00", r'"\u00e9 \ud83d\ude00 \u0000"'),
    (torch.float32, "f32"),
    (torch.bfloat16, "bf16"),
    (torch.bool, "bool"),
    (torch.strided, "strided"),
    (torch.sparse_coo, "sparse_coo"),
    (torch.channels_last, "channels_last"),
    (torch.preserve_format, "preserve_format"),
    (torch.device("cpu"), 'device("cpu")'),
    (torch.device("cuda:1"), 'device("cuda:1")'),
    ([1, [2.5, []], "x", torch.int64], '[1, [2.5, []], "x", i64]'),
]


@pytest.mark.parametrize(("value", "spelling"), LITERALS, ids=[s for _, s in LITERALS])
def test_literal_prints_canonically_and_round_trips(value: object, spelling: str) -> None:
    prim = Prim("aten.clamp.default", (HOLE, value, None))
    program = Program("literals", inputs=(Input("x", TensorType(torch.float32, (2,))),), defs=(Definition("f", prim),))
    text = print_program(program)
    assert f"%f = aten.clamp.default(_, {spelling}, none)" in text.splitlines()
    assert parse(text).definition("f").term is prim


# ---- examples, grammar, docs -----------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_round_trips_and_is_canonical_apart_from_comments(path: Path) -> None:
    text = path.read_text()
    program = parse(text, str(path))
    printed = print_program(program)
    assert parse(printed) == program
    assert print_program(parse(printed)) == printed
    without_comments = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    assert printed == without_comments


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_fast_lexer_matches_lark_contextual_lexer_on_examples(lexers, path: Path) -> None:
    assert_same_tokens(lexers, path.read_text())


def test_three_examples_exist() -> None:
    assert [p.name for p in EXAMPLES] == ["mlp.bwsk", "residual.bwsk", "tied.bwsk"]


def test_grammar_loads_under_lark_strict_mode() -> None:
    parser = grammar_parser(strict=True)
    tree = parser.parse((ROOT / "grammar" / "examples" / "residual.bwsk").read_text())
    assert tree.data == "start"


def docs_snippets() -> list[str]:
    return re.findall(r"^```bwsk\n(.*?)^```", DOCS.read_text(), flags=re.S | re.M)


def test_docs_have_bwsk_snippets() -> None:
    assert len(docs_snippets()) >= 5


@pytest.mark.parametrize("index", range(len(docs_snippets())))
def test_docs_snippet_parses_verifies_and_round_trips(index: int) -> None:
    program = parse(docs_snippets()[index], f"docs/ir.md snippet {index}")
    assert parse(print_program(program)) == program


def test_docs_canonical_form_example_prints_as_shown() -> None:
    found = re.search(r"```bwsk\n([^`]*)```\n\nprints as\n\n```bwsk\n([^`]*)```", DOCS.read_text())
    assert found is not None
    source, shown = found.groups()
    assert print_program(parse(source)) == shown
