"""Pattern -> replacement rewriting over terms, applied bottom-up to a fixpoint.

Patterns are terms with variables, written as text: `B ?f I -> ?f`. A variable
matches any term; a variable used twice matches the same term twice, which with
hash-consing is an identity test. Normal forms are memoised per term, so shared
sub-terms are rewritten once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from bwsk.ir.program import Program
from bwsk.ir.terms import App, Comb, ListArg, Node, Prim, Term
from bwsk.ir.verifier import verify


class Var(Term):
    """A pattern variable `?name`; appears only in rules, never in programs."""

    __slots__ = ("name",)
    _fields = ("name",)
    name: str

    def __new__(cls, name: str) -> Var:
        return cls._intern((name,), name)


_TOKEN = re.compile(r"\s*(\?[a-z][a-z0-9_]*|[SKBCWI]|\(|\))")


def parse_pattern(text: str) -> Term:
    """Parse a pattern made of combinators, `?variables` and parentheses."""
    tokens: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise ValueError(f"bad pattern {text!r} at {position}")
        tokens.append(match.group(1))
        position = match.end()
    tokens.reverse()

    def sequence() -> Term:
        term = atom()
        while tokens and tokens[-1] != ")":
            term = App(term, atom())
        return term

    def atom() -> Term:
        token = tokens.pop()
        if token == "(":
            term = sequence()
            if tokens.pop() != ")":
                raise ValueError(f"unbalanced pattern {text!r}")
            return term
        return Var(token[1:]) if token.startswith("?") else Comb(token)

    term = sequence()
    if tokens:
        raise ValueError(f"trailing input in pattern {text!r}")
    return term


def match(pattern: Term, term: Term, bindings: dict[str, Term]) -> bool:
    """Extend `bindings` so that `pattern` instantiated equals `term`; False if impossible."""
    if isinstance(pattern, Var):
        bound = bindings.get(pattern.name)
        if bound is None:
            bindings[pattern.name] = term
            return True
        return bound is term
    if isinstance(pattern, App):
        return isinstance(term, App) and match(pattern.fn, term.fn, bindings) and match(pattern.arg, term.arg, bindings)
    return pattern is term


def instantiate(pattern: Term, bindings: Mapping[str, Term]) -> Term:
    if isinstance(pattern, Var):
        return bindings[pattern.name]
    if isinstance(pattern, App):
        return App(instantiate(pattern.fn, bindings), instantiate(pattern.arg, bindings))
    return pattern


@dataclass(frozen=True)
class Rule:
    """`lhs -> rhs`: both sides take the same arguments to the same result (checked by tests)."""

    name: str
    lhs: Term
    rhs: Term

    @classmethod
    def parse(cls, name: str, text: str) -> Rule:
        lhs, arrow, rhs = text.partition("->")
        if not arrow:
            raise ValueError(f"rule {name!r} has no '->'")
        return cls(name, parse_pattern(lhs), parse_pattern(rhs))

    def __str__(self) -> str:
        return f"{self.name}: {_show(self.lhs)} -> {_show(self.rhs)}"


def _show(term: Term) -> str:
    if isinstance(term, Var):
        return f"?{term.name}"
    if isinstance(term, App):
        arg = _show(term.arg)
        return f"{_show(term.fn)} {f'({arg})' if isinstance(term.arg, App) else arg}"
    return term.name  # a combinator


def _rebuild_prim(prim: Prim, rewrite: Rewriter) -> Prim:
    def visit(arg: Node) -> Node:
        if isinstance(arg, Term):
            return rewrite(arg)
        if isinstance(arg, ListArg):
            return ListArg(tuple(visit(item) for item in arg.items))
        return arg

    return Prim(prim.op, tuple(visit(a) for a in prim.args), tuple((k, visit(a)) for k, a in prim.kwargs))


class Rewriter:
    """Rewrites terms to normal form under `rules` (tried in order at each node)."""

    def __init__(self, rules: Iterable[Rule], *, fuel: int = 1_000_000):
        self.rules = tuple(rules)
        self.memo: dict[Term, Term] = {}
        self.fuel = fuel
        self.fired: dict[str, int] = {rule.name: 0 for rule in self.rules}

    def __call__(self, term: Term) -> Term:
        done = self.memo.get(term)
        if done is not None:
            return done
        result = term
        while True:
            if isinstance(result, App):
                result = App(self(result.fn), self(result.arg))
            elif isinstance(result, Prim):
                result = _rebuild_prim(result, self)
            rewritten = self._step(result)
            if rewritten is None:
                break
            result = rewritten
        self.memo[term] = result
        self.memo[result] = result
        return result

    def _step(self, term: Term) -> Term | None:
        for rule in self.rules:
            bindings: dict[str, Term] = {}
            if match(rule.lhs, term, bindings):
                self.fuel -= 1
                if self.fuel < 0:
                    raise RuntimeError("rewriting did not reach a fixpoint (fuel exhausted)")
                self.fired[rule.name] += 1
                return instantiate(rule.rhs, bindings)
        return None


def rewrite_program(program: Program, rules: Iterable[Rule]) -> Program:
    """Rewrite every definition's term; the result is verified."""
    rewriter = Rewriter(rules)
    return verify(program.with_defs([replace(d, term=rewriter(d.term)) for d in program.defs]))
