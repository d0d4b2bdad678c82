"""The generated Triton text: golden, deterministic, importable, and faithful to its plans."""

import ast

from paths import GOLDEN

from bwsk.kernels import cache, codegen, runtime
from bwsk.kernels.patterns import SeamPattern, SeamUse, plan_kernels

USES = [
    (SeamPattern("add", "layernorm", True, True, 1e-5), SeamUse("pythia-70m", "gpt_neox.layers.0", "y1")),
    (SeamPattern("add", "layernorm", True, True, 1e-5), SeamUse("pythia-70m", "gpt_neox.layers.0", "y2")),
    (SeamPattern("add", "rmsnorm", True, False, 1e-6), SeamUse("smollm-135m", "model.layers.0", "y1")),
    (SeamPattern("add", "none", False, False, 0.0), SeamUse("toy", "blocks.3", "y2")),
]


def test_golden_module_text():
    text = codegen.emit_module(plan_kernels(USES), title="Golden example: two models and a toy.")
    golden = GOLDEN / "kernels.seams.py.txt"
    assert text == golden.read_text(), f"regenerate {golden} if the change is intended"


def test_text_is_deterministic_and_valid_python():
    first = codegen.emit_module(plan_kernels(USES))
    assert first == codegen.emit_module(plan_kernels(list(reversed(USES))))
    tree = ast.parse(first)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    for pattern, _ in USES:
        expected = {f"{pattern.name}_forward", f"{pattern.name}_rebuild"} | (
            {f"{pattern.name}_backward"} if pattern.norm != "none" else set()
        )
        assert expected <= functions


def test_module_lists_its_patterns_and_kernels():
    module = cache.load(codegen.emit_module(plan_kernels(USES)))
    assert {SeamPattern(**fields) for fields in module.PATTERNS.values()} == {pattern for pattern, _ in USES}
    for pattern, _ in USES:
        kernels = runtime.kernels_in(module, pattern)
        assert (kernels.backward is None) == (pattern.norm == "none")


def test_header_names_every_user():
    text = codegen.emit_module(plan_kernels(USES))
    for _, use in USES:
        assert f"#   {use}\n" in text
