"""Bracket abstraction: turn a term with a free variable into a combinator function of it.

`abstract(x, t)` returns F with `F x == t` for every value of x (x is a `%name`
reference standing for the variable). Sharing is kept: a value used twice is
bound once with `let_(v, e, body)`, which is `(\\v. body) e` written with
combinators, and abstraction never copies a sub-term. Primitives whose embedded
arguments mention x become sections: those arguments turn into holes, filled
by application. The result is tidied with the simplification laws (eta, S->B,
S->C, S->W, ...), so a chain reads as B, a shared argument as S or W, a flipped
one as C.
"""

from __future__ import annotations

from bwsk.ir.laws import SIMPLIFICATIONS
from bwsk.ir.rewrite import Rewriter
from bwsk.ir.terms import HOLE, App, B, C, I, K, ListArg, Prim, Ref, S, Term, apply, children


class FreeValues:
    """Memoised sets of free %names of terms (terms are hash-consed, so the memo is exact)."""

    def __init__(self) -> None:
        self.memo: dict[Term, frozenset[str]] = {}

    def __call__(self, term: Term) -> frozenset[str]:
        found = self.memo.get(term)
        if found is None:
            if isinstance(term, Ref):
                found = frozenset((term.name,)) if term.kind == "value" else frozenset()
            else:
                found = frozenset().union(*(self(child) for child in children(term)))
            self.memo[term] = found
        return found


class Abstractor:
    """Bracket abstraction with shared memo tables (one instance per lowering).

    Terms given to `abstract` and `let_` are first curried with respect to the
    variables in play: every primitive whose embedded arguments mention one becomes
    a section applied to those arguments, so abstraction itself only meets
    applications, references and closed primitives.
    """

    def __init__(self) -> None:
        self.free = FreeValues()
        self.simplify = Rewriter(SIMPLIFICATIONS)

    def curry(self, term: Term, variables: frozenset[str]) -> Term:
        """`term` with each primitive that mentions `variables` turned into an applied section."""
        if not variables & self.free(term):
            return term
        if isinstance(term, App):
            return App(self.curry(term.fn, variables), self.curry(term.arg, variables))
        if not isinstance(term, Prim):
            return term
        if term.arity:
            raise ValueError(f"{term.op} already has holes; curry saturated primitives only")
        applied: list[Term] = []

        def visit(arg):
            if isinstance(arg, Term) and variables & self.free(arg):
                applied.append(self.curry(arg, variables))
                return HOLE
            if isinstance(arg, ListArg):
                return ListArg(tuple(visit(item) for item in arg.items))
            return arg

        args = tuple(visit(a) for a in term.args)
        kwargs = tuple((k, visit(a)) for k, a in term.kwargs)
        return apply(Prim(term.op, args, kwargs), *applied)

    def abstract(self, variable: str, term: Term, scope: frozenset[str] = frozenset()) -> Term:
        """F such that `F %variable` equals `term`, simplified; `scope` names the other variables in play."""
        return self.simplify(self._abstract(variable, self.curry(term, scope | {variable}), {}))

    def let_(self, variable: str, value: Term, body: Term, scope: frozenset[str] = frozenset()) -> Term:
        """`let %variable = value in body`, as `(abstraction of body) value`."""
        curried_body = self.curry(body, scope | {variable})
        return App(self._abstract(variable, curried_body, {}), self.curry(value, scope))

    def _abstract(self, x: str, term: Term, memo: dict[Term, Term]) -> Term:
        done = memo.get(term)
        if done is not None:
            return done
        if x not in self.free(term):
            result = App(K, term)
        elif isinstance(term, Ref):
            result = I
        elif isinstance(term, Prim):
            raise ValueError(f"{term.op} mentions %{x} in an embedded argument: curry the term first")
        else:
            fn, arg = term.fn, term.arg
            if x not in self.free(fn):
                result = fn if isinstance(arg, Ref) and arg.name == x else apply(B, fn, self._abstract(x, arg, memo))
            elif x not in self.free(arg):
                result = apply(C, self._abstract(x, fn, memo), arg)
            else:
                result = apply(S, self._abstract(x, fn, memo), self._abstract(x, arg, memo))
        memo[term] = result
        return result
