"""Names in generated source: `mention` is a literal that cannot leave a comment or docstring, `identifier` refuses non-identifiers."""

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bwsk.kernels import codegen
from bwsk.kernels.patterns import SeamPattern, SeamUse, plan_kernels
from bwsk.kernels.source import identifier, mention

ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(['"""', "'''", "\\", "\r", "\x00", "#", "\u2028"])


@given(ANY_TEXT)
def test_a_mention_is_the_name_or_a_quoted_literal_of_it(text):
    written = mention(text)
    assert written.isascii() and written.isprintable() and '"' not in written
    assert written == text or ast.literal_eval(written) == text


@given(ANY_TEXT)
def test_a_mention_inside_a_comment_and_a_docstring_adds_no_code(text):
    source = f'"""Model {mention(text)}."""\n# serves {mention(text)}\nVALUE = 1\n'
    tree = ast.parse(source)
    assert [type(node) for node in tree.body] == [ast.Expr, ast.Assign]


@pytest.mark.parametrize("name", ["seam_add", "_private", "x1"])
def test_identifiers_pass_unchanged(name):
    assert identifier(name) == name


@pytest.mark.parametrize("name", ["", "1x", "a b", "a\nb", "class", "modèle", "a.b", "f()"])
def test_non_identifiers_are_refused(name):
    with pytest.raises(ValueError, match="is not a Python identifier"):
        identifier(name)


def test_a_user_line_with_a_hostile_block_stays_one_comment():
    use = SeamUse("m'\n", "blocks.0\nimport os", "y1")
    text = codegen.emit_module(plan_kernels([(SeamPattern("add", "none", False, False, 0.0), use)]))
    assert "#   'm\\'\\n' 'blocks.0\\nimport os' (y1)\n" in text
    assert not any(line.startswith("import os") for line in text.splitlines())


def test_a_seam_name_that_is_not_an_identifier_is_refused():
    use = SeamUse("m", "blocks.0", "y1\nimport os")
    with pytest.raises(ValueError, match="is not a Python identifier"):
        codegen.emit_module(plan_kernels([(SeamPattern("add", "none", False, False, 0.0), use)]))
