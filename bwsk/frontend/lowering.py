"""ExportedProgram -> Program.

Each FX call becomes a primitive application; parameters, buffers and constants
stay named references (state-dict names), user inputs become program inputs.
Structure is made explicit:

- a residual `add(x, F(x))` whose branch is closed (every value computed between
  x and F(x) is used only inside the branch) becomes a branch function
  `%<module>.branch : fn(T) -> T` built by bracket abstraction, and the add
  reads `S aten.add.Tensor(_, _) %<module>.branch %x`; values the branch uses
  twice are let-bound inside it with S, so nothing is computed twice;
- a chain of single-use calls within one module folds into one definition,
  `B f (B g h) %x`; a value used twice by one call reads as W;
- every other value is one definition, named after its module path
  (`gpt_neox.layers.3.attention.addmm`), typed from the export's metadata.

Assertion-only calls (no users, no data) are dropped and counted in the program's
attributes; any other operator the evaluator cannot run is a LoweringError that
names it and its module path.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.fx

from bwsk.errors import LoweringError
from bwsk.frontend.wrappers import without_wrappers
from bwsk.ir import ops
from bwsk.ir.abstraction import Abstractor
from bwsk.ir.program import Definition, Input, Output, Program, State
from bwsk.ir.terms import HOLE, App, Prim, Ref, S, Term, apply, as_arg, children
from bwsk.ir.types import FunctionType, ScalarType, Type, type_of_value
from bwsk.ir.verifier import verify

ASSERTIONS = frozenset(
    {
        "aten._assert_tensor_metadata.default",
        "aten._assert_async.msg",
        "aten._assert_scalar.default",
        "aten.sym_constrain_range_for_size.default",
        "aten.sym_constrain_range.default",
    }
)
_STATE_KINDS = {"PARAMETER": "param", "BUFFER": "buffer", "CONSTANT_TENSOR": "const"}


def _value_type(value: object) -> Type:
    if isinstance(value, torch.SymInt):
        return ScalarType("int")
    if isinstance(value, torch.SymFloat):
        return ScalarType("float")
    if isinstance(value, torch.SymBool):
        return ScalarType("bool")
    return type_of_value(value)


def _common_prefix(paths: list[str]) -> str:
    split = [p.split(".") if p else [] for p in paths]
    prefix: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix)


def _inputs_of(node: torch.fx.Node) -> list[torch.fx.Node]:
    return list(dict.fromkeys(node.all_input_nodes))


@dataclass
class _Region:
    """A closed residual branch: `add(x, out)` with `nodes` computed between x and out."""

    add: torch.fx.Node
    x: torch.fx.Node
    out: torch.fx.Node
    nodes: set[torch.fx.Node]
    external: set[torch.fx.Node] = field(default_factory=set)


class _Lowering:
    def __init__(self, ep: torch.export.ExportedProgram, prefix: str, name: str, level: str, input_names: tuple[str, ...]):
        self.ep = ep
        self.input_names = input_names
        self.prefix = prefix
        self.name = name
        self.level = level
        self.graph = without_wrappers(ep.graph_module).graph
        self.abstractor = Abstractor()
        self.names: dict[torch.fx.Node, str] = {}
        self.refs: dict[torch.fx.Node, Term] = {}
        self.used_names: set[str] = set()
        self.dropped = Counter()
        self.dropped_nodes: set[torch.fx.Node] = set()

    def users(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        """The users of a node that carry data (dropped assertions do not count)."""
        return [u for u in node.users if u not in self.dropped_nodes]

    # ---- naming ----
    def strip(self, path: str) -> str:
        if self.prefix and (path == self.prefix or path.startswith(self.prefix + ".")):
            return path[len(self.prefix) + 1 :]
        return path

    def module_of(self, node: torch.fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        return "" if path.startswith("_empty_nn_module_stack") else self.strip(path)

    def fresh(self, base: str) -> str:
        base = ".".join(part for part in base.replace("[", ".").replace("]", "").split(".") if part)
        base = "".join(c if c.isalnum() or c in "._" else "_" for c in base) or "v"
        name, n = base, 0
        while name in self.used_names:
            n += 1
            name = f"{base}_{n}"
        self.used_names.add(name)
        return name

    def short_op(self, node: torch.fx.Node) -> str:
        op = ops.operator_name(node.target)
        return op.split(".")[1].lstrip("_") or "op"

    # ---- signature ----
    def collect_signature(self) -> tuple[list[Input], list[State]]:
        placeholders = {n.name: n for n in self.graph.nodes if n.op == "placeholder"}
        inputs, state = [], []
        for spec in self.ep.graph_signature.input_specs:
            node = placeholders[spec.arg.name]
            kind = spec.kind.name
            if kind == "USER_INPUT":
                position = len(inputs)
                name = self.fresh(self.input_names[position] if position < len(self.input_names) else node.name)
                self.refs[node] = Ref("value", name)
                inputs.append(Input(name, _value_type(node.meta["val"])))
            elif kind in _STATE_KINDS:
                if not node.users:
                    continue  # e.g. the second name of a tied weight: the export reads the other one
                target = self.strip(spec.target)
                self.refs[node] = Ref("state", target)
                state.append(State(target, _STATE_KINDS[kind], _value_type(node.meta["val"])))
            else:
                raise LoweringError(f"unsupported input kind {kind} for {node.name}")
        return inputs, state

    # ---- structure ----
    def find_regions(self, calls: list[torch.fx.Node], outputs: set[torch.fx.Node]) -> list[_Region]:
        index = {n: i for i, n in enumerate(self.graph.nodes)}
        owner: dict[torch.fx.Node, _Region] = {}
        regions: list[_Region] = []
        for add in calls:
            if add.target is not torch.ops.aten.add.Tensor or add.kwargs.get("alpha", 1) != 1 or len(add.args) != 2:
                continue
            for x, out in (add.args, add.args[::-1]):
                region = self.closed_branch(add, x, out, index, owner, outputs)
                if region is not None:
                    regions.append(region)
                    for node in region.nodes:
                        owner[node] = region
                    break
        return regions

    def closed_branch(self, add, x, out, index, owner, outputs) -> _Region | None:
        if not (isinstance(x, torch.fx.Node) and isinstance(out, torch.fx.Node)) or out.op != "call_function":
            return None
        if x is out or len(self.users(out)) != 1 or index[x] >= index[out]:
            return None
        # nodes between x and out: ancestors of out (back to x's position) that depend on x
        ancestors, stack = set(), [out]
        while stack:
            node = stack.pop()
            if node in ancestors or index[node] <= index[x]:
                continue
            ancestors.add(node)
            stack.extend(_inputs_of(node))
        depends = {x}
        for node in sorted(ancestors, key=index.__getitem__):
            if any(i in depends for i in _inputs_of(node)):
                depends.add(node)
        nodes = depends - {x}
        if out not in nodes:
            return None
        for node in nodes:
            if node.op != "call_function" or node in outputs:
                return None
            if node is not out and any(u not in nodes for u in self.users(node)):
                return None
        external = {i for n in nodes for i in _inputs_of(n)} - nodes - {x}
        inner_regions = {id(owner[n]): owner[n] for n in nodes if n in owner}
        for inner in inner_regions.values():
            if any(e in nodes and e is not inner.x for e in inner.external):
                return None
        if any(e in owner for e in external):
            return None
        return _Region(add, x, out, nodes, external)

    # ---- terms ----
    def operand(self, value: object, resolve) -> object:
        if isinstance(value, torch.fx.Node):
            return resolve(value)
        if isinstance(value, (list, tuple)):
            return [self.operand(v, resolve) for v in value]
        if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            raise LoweringError(f"a symbolic value with no node that computes it: {value}")
        return value

    def prim_of(self, node: torch.fx.Node, resolve) -> Prim:
        op = self.op_name(node)
        if ops.resolve(op) is None:
            raise LoweringError(f"operator {op} (in {self.module_of(node) or 'the top level'}) cannot be evaluated by bwsk")
        args = tuple(as_arg(self.operand(a, resolve)) for a in node.args)
        kwargs = tuple((k, as_arg(self.operand(v, resolve))) for k, v in node.kwargs.items())
        return Prim(op, args, kwargs)

    def op_name(self, node: torch.fx.Node) -> str:
        try:
            return ops.operator_name(node.target)
        except KeyError:
            where = self.module_of(node) or "the top level"
            raise LoweringError(f"operator {node.target!r} (in {where}) is not an ATen operator bwsk can evaluate") from None

    def residual_term(self, region: _Region, resolve) -> Term:
        return apply(S, _ADD, Ref("value", self.branch_names[id(region)]), resolve(region.x))

    # ---- the whole program ----
    def build(self) -> Program:
        inputs, state = self.collect_signature()
        calls = []
        for node in self.graph.nodes:
            if node.op != "call_function":
                continue
            if self.op_name(node) in ASSERTIONS and not node.users:
                self.dropped[self.op_name(node)] += 1
                self.dropped_nodes.add(node)
                continue
            calls.append(node)
        index = {n: i for i, n in enumerate(self.graph.nodes)}
        output_node = next(n for n in self.graph.nodes if n.op == "output")
        results = list(output_node.args[0]) if isinstance(output_node.args[0], (list, tuple)) else [output_node.args[0]]
        user_results = [value for spec, value in zip(self.ep.graph_signature.output_specs, results) if spec.kind.name == "USER_OUTPUT"]
        result_nodes = {v for v in user_results if isinstance(v, torch.fx.Node)}

        regions = self.find_regions(calls, result_nodes)
        home: dict[torch.fx.Node, _Region] = {}
        for region in regions:
            for node in region.nodes:
                home.setdefault(node, region)
        residual_of = {region.add: region for region in regions}
        external = {e for region in regions for e in region.external}
        occurrences = _occurrences(calls)

        top = [n for n in calls if n not in home]
        top_set = set(top)
        inlined = set()
        for node in top:
            users = self.users(node)
            if (
                len(users) == 1
                and occurrences[node] == 1
                and users[0] in top_set
                and node not in result_nodes
                and node not in external
                and node not in residual_of
                and self.module_of(users[0]) == self.module_of(node)
            ):
                inlined.add(node)

        self.branch_names = {id(r): self.fresh(_common_prefix([self.module_of(n) for n in r.nodes]) + ".branch") for r in regions}
        self.function_names = set(self.branch_names.values())
        for node in top:
            if node not in inlined:
                self.names[node] = self.fresh(f"{self.module_of(node)}.{self.short_op(node)}")

        def resolve_top(node: torch.fx.Node) -> Term:
            if node in self.refs:
                return self.refs[node]
            if node in self.names:
                return Ref("value", self.names[node])
            if node in inlined:
                return top_term(node)
            raise LoweringError(f"value {node.name} is used outside the branch that computes it")

        def top_term(node: torch.fx.Node) -> Term:
            if node in residual_of:
                return self.residual_term(residual_of[node], resolve_top)
            return self.prim_of(node, resolve_top)

        self.items = []
        for node in top:
            if node in inlined:
                continue
            term = self.structured(top_term(node))
            definition = Definition(self.names[node], term, self.type_of(node), self.module_of(node) or None)
            self.items.append(((index[node], 0), definition))
        context = _Context(index, home, residual_of, occurrences, resolve_top)
        for region in regions:
            self.branch_definition(region, context)
        self.items.sort(key=lambda item: item[0])

        outputs = []
        for value in user_results:
            if not isinstance(value, torch.fx.Node):
                raise LoweringError(f"a constant model output ({value!r}) is not supported")
            outputs.append(Output(resolve_top(value), self.type_of(value)))
        attrs = [("level", self.level)]
        if self.dropped:
            attrs.append(("dropped", ", ".join(f"{n} x{c}" for n, c in sorted(self.dropped.items()))))
        program = Program(self.name, tuple(inputs), tuple(state), tuple(d for _, d in self.items), tuple(outputs), tuple(attrs))
        return verify(program)

    def type_of(self, node: torch.fx.Node) -> Type | None:
        value = node.meta.get("val")
        return None if value is None else _value_type(value)

    def structured(self, tree: Term) -> Term:
        """A folded tree as `F %x` over its most-used input, when that shows a chain or a shared value."""
        counts: Counter[str] = Counter()
        prims = 0
        stack = [tree]
        while stack:
            term = stack.pop()
            if isinstance(term, Ref):
                if term.kind == "value" and term.name not in self.function_names:
                    counts[term.name] += 1
                continue
            if isinstance(term, Prim):
                prims += 1
            stack.extend(children(term))
        if not counts or (prims < 2 and max(counts.values()) < 2):
            return tree
        variable = max(counts, key=counts.__getitem__)
        return App(self.abstractor.abstract(variable, tree), Ref("value", variable))

    def branch_definition(self, region: _Region, context: _Context) -> None:
        """Emit `%<module>.branch`, the function x -> out of a residual region (and its module functions)."""
        own = {n for n in region.nodes if context.home[n] is region}
        prefix = _common_prefix([self.module_of(n) for n in region.nodes])
        term = self.function_term(own, region.x, region.out, prefix, context, depth=0)
        name = self.branch_names[id(region)]
        self.emit((context.index[region.add], -1), name, term, region.x, region.out, prefix)

    def function_term(self, nodes: set, entry, exit, prefix: str, context: _Context, depth: int) -> Term:
        """The combinator function `entry -> exit` computing `nodes`.

        Each child module of `prefix` whose nodes here have one variable input and one
        output becomes its own function definition, applied where its output is used.
        Values used twice are let-bound, so each node is computed once per call.
        """
        calls: dict[torch.fx.Node, tuple[str, torch.fx.Node]] = {}
        hidden: set = set()
        for module, group in _child_groups(nodes, prefix, self.module_of).items():
            inputs = {i for n in group for i in _inputs_of(n) if i not in group and (i is entry or i in nodes)}
            outputs = [n for n in group if n is exit or any(u not in group for u in self.users(n))]
            if len(group) < 2 or len(inputs) != 1 or len(outputs) != 1 or group == nodes:
                continue
            (value,), (result,) = inputs, outputs
            term = self.function_term(group, value, result, module, context, depth + 1)
            name = self.fresh(module)
            self.function_names.add(name)
            self.emit((context.index[result], -2 - depth), name, term, value, result, module)
            calls[result] = (name, value)
            hidden |= group - {result}
        own = sorted(nodes - hidden, key=context.index.__getitem__)
        shared = [n for n in own if n is not exit and context.occurrences[n] > 1]
        variable = "__x"
        let_names = {n: f"__let{i}" for i, n in enumerate(shared)}

        def resolve(node: torch.fx.Node) -> Term:
            if node is entry:
                return Ref("value", variable)
            if node in let_names:
                return Ref("value", let_names[node])
            if node in nodes:
                return term_of(node)
            return context.resolve_top(node)

        def term_of(node: torch.fx.Node) -> Term:
            if node in calls:
                name, value = calls[node]
                return App(Ref("value", name), resolve(value))
            if node in context.residual_of:
                return self.residual_term(context.residual_of[node], resolve)
            return self.prim_of(node, resolve)

        scope = frozenset([variable, *let_names.values()])
        body = term_of(exit)
        for node in reversed(shared):
            body = self.abstractor.let_(let_names[node], term_of(node), body, scope)
        function = self.abstractor.abstract(variable, body, scope)
        leftover = [v for v in self.abstractor.free(function) if v.startswith("__")]
        if leftover:
            raise LoweringError(f"internal: function {prefix} still mentions {leftover}")
        return function

    def emit(self, key: tuple, name: str, term: Term, entry, exit, module: str) -> None:
        x_type, out_type = self.type_of(entry), self.type_of(exit)
        type_ = FunctionType((x_type,), out_type) if x_type is not None and out_type is not None else None
        self.items.append((key, Definition(name, term, type_, module or None)))


@dataclass
class _Context:
    """What function bodies need from the whole graph while they are built."""

    index: dict
    home: dict
    residual_of: dict
    occurrences: Counter
    resolve_top: object


def _child_groups(nodes: set, prefix: str, module_of) -> dict[str, set]:
    """Nodes grouped by the child module of `prefix` they belong to (nodes of `prefix` itself are left out)."""
    depth = len(prefix.split(".")) if prefix else 0
    groups: dict[str, set] = {}
    for node in nodes:
        parts = module_of(node).split(".") if module_of(node) else []
        if len(parts) > depth and parts[:depth] == (prefix.split(".") if prefix else []):
            groups.setdefault(".".join(parts[: depth + 1]), set()).add(node)
    return groups


_ADD = Prim("aten.add.Tensor", (HOLE, HOLE))


def _occurrences(calls: list[torch.fx.Node]) -> Counter:
    """How many times each node is passed as an argument, over all its users."""
    counts: Counter = Counter()

    def visit(value: object) -> None:
        if isinstance(value, torch.fx.Node):
            counts[value] += 1
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    for node in calls:
        visit(node.args)
        visit(node.kwargs)
    return counts


def program_from_export(
    ep: torch.export.ExportedProgram,
    *,
    name: str = "model",
    level: str = "core",
    strip_prefix: str = "",
    input_names: tuple[str, ...] = (),
) -> Program:
    """The verified Program of an ExportedProgram's graph, taken at the level it is at (`bwsk.frontend.compile.lower` picks one).

    `strip_prefix` is removed from state and module names (a wrapper's attribute);
    `input_names` name the user inputs in order (default: the export's placeholder names).
    """
    return _Lowering(ep, strip_prefix, name, level, tuple(input_names)).build()
