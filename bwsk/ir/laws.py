"""The combinator laws: the first rule set of the rewrite engine.

Each law says that both sides give equal results on every argument list
(extensional equality); each strictly shrinks the term, so rewriting with them
terminates. `tests/test_laws.py` proves each one with the evaluator on random
tensors.
"""

from __future__ import annotations

from bwsk.ir.rewrite import Rule

REDUCTIONS: tuple[Rule, ...] = tuple(
    Rule.parse(name, text)
    for name, text in (
        ("I-reduce", "I ?x -> ?x"),
        ("K-reduce", "K ?x ?y -> ?x"),
        ("B-reduce", "B ?f ?g ?x -> ?f (?g ?x)"),
        ("C-reduce", "C ?f ?x ?y -> ?f ?y ?x"),
    )
)

# Laws that never unfold a composition: the lowering uses these to tidy abstractions.
SIMPLIFICATIONS: tuple[Rule, ...] = tuple(
    Rule.parse(name, text)
    for name, text in (
        ("B-right-identity", "B ?f I -> ?f"),
        ("B-left-identity", "B I ?f -> ?f"),
        ("B-constant", "B (K ?x) ?f -> K ?x"),
        ("S-constant-both", "S (K ?f) (K ?g) -> K (?f ?g)"),
        ("S-eta", "S (K ?f) I -> ?f"),
        ("S-to-B", "S (K ?f) ?g -> B ?f ?g"),
        ("S-to-C", "S ?f (K ?g) -> C ?f ?g"),
        ("S-to-W", "S ?f I -> W ?f"),
        ("C-constant", "C (K ?f) ?x -> K (?f ?x)"),
        ("C-K", "C K ?x -> I"),
        ("C-involution", "C (C ?f) -> ?f"),
        ("W-K", "W K -> I"),
        ("W-constant", "W (K ?f) -> ?f"),
    )
)

COMBINATOR_LAWS: tuple[Rule, ...] = REDUCTIONS + SIMPLIFICATIONS
