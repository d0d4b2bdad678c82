"""The algebra of axis labels: the logical axes (batch, sequence, hidden) each dimension of a tensor carries, and where shards cut it.

A tensor's labels are one `Dim` per dimension; a dimension is a tuple of factors
in row-major order: a view merging [batch, sequence] gives one dimension of two
factors, a view splitting hidden into [heads, head_dim] two dimensions whose
factors are both `hidden`, so a later view recovers the axes exactly. Tuple
values are labelled item by item (`Items`).

Sharding model: activations are cut into contiguous blocks along one axis. A
factor lists the axes whose block boundaries cut it (`sharded`): the outer piece
of a split keeps them, inner pieces do not (the shard count is assumed to divide
the outer piece: shards hold whole heads, patches, groups). Invariants: factor
sizes multiply to the dimension's size; `sharded` is a subset of `axes`; in a
tensor an axis is sharded in at most one factor (`bwsk.passes.coordinate.rules.settle`
enforces it); weights, constants and what is made from them alone carry no axes
(they are replicated).

`hidden` is sharded the way tensor parallelism (Megatron-LM, torch's ColwiseParallel /
RowwiseParallel) shards it: the weights are split, and an activation's hidden is cut only
where a product with a weight made it. Program inputs and embedding lookups are whole in
hidden; a product with a weight whose contracted dimension is whole splits the weight by
output features (column-parallel: its fresh hidden is sharded, no communication), one whose
contracted dimension is sharded splits it by input features (row-parallel: the partial sums
are all-reduced and its fresh hidden is whole). Batch and sequence are cut in the program
inputs and stay cut until a call gathers them.

Also here: the default axes of program inputs by rank, and `schema`, an aten
target's arguments by name, which the rules read calls with.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bwsk.ir.ops import signature
from bwsk.ir.types import TensorType, TupleType, Type

AXES = ("batch", "sequence", "hidden")
NONE: frozenset[str] = frozenset()
HIDDEN = frozenset({"hidden"})
DEFAULT_INPUTS = {1: "batch", 2: "batch,sequence", 3: "batch,sequence,hidden", 4: "batch,hidden,sequence,sequence"}
PAIRS = "pairs positions: attention over keys"


class Factor(NamedTuple):
    """A row-major piece of a dimension: its logical axes, its size, and the axes whose shard boundaries cut it."""

    axes: frozenset[str]
    size: int
    sharded: frozenset[str]


Dim = tuple[Factor, ...]
Labels = tuple[Dim, ...]  # one entry per tensor dimension


@dataclass(frozen=True)
class Items:
    """Labels of a tuple value, item by item (None for items that are not tensors)."""

    items: tuple[Labels | None, ...]


class Unsupported(Exception):
    """A rule met a form of its op that it does not model: the call is treated as unknown."""


def plain(size: int) -> Dim:
    return (Factor(NONE, size, NONE),)


def fresh_hidden(size: int, sharded: bool) -> Dim:
    """A dimension a weight makes: cut by hidden shards when the weight is split by these features (column-parallel)."""
    return (Factor(HIDDEN, size, HIDDEN if sharded else NONE),)


def unlabelled(shape: Sequence[int]) -> Labels:
    return tuple(plain(n) for n in shape)


def axes_of(dim: Dim) -> frozenset[str]:
    return frozenset().union(*(f.axes for f in dim))


def sharded_of(dim: Dim) -> frozenset[str]:
    return frozenset().union(*(f.sharded for f in dim))


def size_of(dim: Dim) -> int:
    return math.prod(f.size for f in dim)


def sizes(labels: Labels) -> tuple[int, ...]:
    return tuple(size_of(d) for d in labels)


def resize(dim: Dim, size: int) -> Dim:
    """`dim` cut or grown to `size` along its outermost non-trivial factor, labels kept (none on a single position)."""
    if size_of(dim) == size:
        return dim
    if size == 1:
        return plain(1)
    lead = next((i for i, f in enumerate(dim) if f.size > 1), len(dim) - 1)
    inner = math.prod(f.size for f in dim[lead + 1 :])
    if inner and size % inner == 0:
        return (*dim[:lead], dim[lead]._replace(size=size // inner), *dim[lead + 1 :])
    return (Factor(axes_of(dim), size, sharded_of(dim)),)


def refine(a: Dim, b: Dim) -> Dim | None:
    """The common refinement of two factorings of one size, axes united piece by piece (None if there is none)."""
    qa, qb = list(reversed(a)), list(reversed(b))
    out: list[Factor] = []
    while qa and qb:
        fa, fb = qa[-1], qb[-1]
        if (fa.size == 1) != (fb.size == 1):
            out.append((qa if fa.size == 1 else qb).pop())
            continue
        n = min(fa.size, fb.size)
        if max(fa.size, fb.size) % n:
            return None
        for queue, f in ((qa, fa), (qb, fb)):
            queue.pop()
            if f.size > n:
                queue.append(Factor(f.axes, f.size // n, NONE))
        out.append(Factor(fa.axes | fb.axes, n, fa.sharded | fb.sharded))
    return tuple(out) + tuple(reversed(qa + qb))


def merge(dims: Iterable[Dim], size: int) -> Dim:
    """One output dimension from aligned operand dimensions: their axes united over a common factoring."""
    found = [resize(d, size) for d in dims if axes_of(d)]
    out: Dim | None = found[0] if found else plain(size)
    for dim in found[1:]:
        out = out if dim == out else refine(out, dim) if out is not None else None
    if out is None:
        return (Factor(frozenset().union(*map(axes_of, found)), size, frozenset().union(*map(sharded_of, found))),)
    return out


def broadcast(operands: Sequence[Labels], shape: Sequence[int]) -> Labels:
    """Labels of an elementwise result: operands aligned from the right, broadcast (size-1) dimensions ignored."""
    rank = len(shape)
    return tuple(
        merge((x[len(x) - rank + i] for x in operands if len(x) >= rank - i and size_of(x[len(x) - rank + i]) == n), n)
        for i, n in enumerate(shape)
    )


def reshape(labels: Labels, shape: Sequence[int]) -> Labels | None:
    """Labels of a row-major view of `labels` as `shape`, or None where a factor would be cut unevenly."""
    queue = [f for d in labels for f in d][::-1]
    out: list[Dim] = []
    for n in shape:
        dim = [queue.pop()] if n == 1 and queue and queue[-1].size == 1 else []
        product = 1
        while product < n and queue:
            f = queue.pop()
            if product * f.size <= n:
                dim.append(f)
                product *= f.size
            elif n % product == 0 and f.size % (n // product) == 0:
                dim.append(f._replace(size=n // product))
                queue.append(Factor(f.axes, f.size * product // n, NONE))
                product = n
            else:
                return None
        if product != n:
            return None
        out.append(tuple(dim) or plain(n))
    if queue and out:
        out[-1] += tuple(reversed(queue))
    return tuple(out)


def drop(labels: Labels, gone: set[int]) -> Labels:
    """`labels` without the size-1 dimensions `gone`; their labelled factors join the next kept dimension."""
    out: list[Dim] = []
    carry: Dim = ()
    for i, dim in enumerate(labels):
        if i in gone:
            carry += tuple(f for f in dim if f.axes)
        else:
            out.append(carry + dim)
            carry = ()
    if carry and out:
        out[-1] += carry
    return tuple(out)


def fill(type_: Type, axes: frozenset[str] = NONE) -> Labels | Items | None:
    """Labels for a value of `type_` whose every dimension carries (and is cut by) `axes`: none for weights."""
    if isinstance(type_, TupleType):
        return Items(tuple(fill(t, axes) for t in type_.items))
    return tuple((Factor(axes, n, axes),) for n in type_.shape) if isinstance(type_, TensorType) else None


def fits(labels: Any, type_: Type) -> bool:
    if isinstance(type_, TupleType):
        return isinstance(labels, Items) and len(labels.items) == len(type_.items) and all(map(fits, labels.items, type_.items))
    if isinstance(type_, TensorType):
        return isinstance(labels, tuple) and sizes(labels) == tuple(type_.shape)
    return labels is None


def axis(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def ints(value: Any, n: int) -> list[int]:
    values = [value] if isinstance(value, int) else list(value)
    return values * n if len(values) == 1 else values


@functools.cache
def schema(target: str) -> tuple[tuple[tuple[str, Any], ...], bool]:
    """(name, default or `...`) of each argument of an `aten.name.overload` target, and whether torch tags it pointwise."""
    found = signature(target) if target.startswith("aten.") else None
    if found is None or found.variadic:
        return (("self", ...), ("index", ...)), False
    return found.defaults, found.pointwise
