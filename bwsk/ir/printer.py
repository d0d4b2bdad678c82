"""Program -> text. Deterministic; `parse(print_program(p)) == p` for every well-formed program.

Layout: the header, then inputs, state, definitions and outputs, each group
separated by a blank line; one statement per line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from bwsk.ir.literals import literal_text
from bwsk.ir.program import Definition, Program
from bwsk.ir.terms import App, Arg, Comb, Hole, ListArg, Lit, Prim, Ref, Term, spine
from bwsk.ir.types import Type


def print_ref(ref: Ref) -> str:
    return ("%" if ref.kind == "value" else "@") + ref.name


def print_arg(arg: Arg) -> str:
    if isinstance(arg, Hole):
        return "_"
    if isinstance(arg, Lit):
        return literal_text(arg.value)
    if isinstance(arg, ListArg):
        return "[" + ", ".join(print_arg(item) for item in arg.items) + "]"
    return print_term(arg)


def _print_prim(prim: Prim) -> str:
    parts = [print_arg(a) for a in prim.args]
    parts.extend(f"{key}={print_arg(value)}" for key, value in prim.kwargs)
    return f"{prim.op}({', '.join(parts)})"


def _print_atom(term: Term) -> str:
    if isinstance(term, App):
        return f"({print_term(term)})"
    return print_term(term)


def print_term(term: Term) -> str:
    """A term's text: application by juxtaposition, parenthesised only where needed."""
    if isinstance(term, App):
        head, args = spine(term)
        return " ".join([_print_atom(head), *(_print_atom(a) for a in args)])
    if isinstance(term, Ref):
        return print_ref(term)
    if isinstance(term, Comb):
        return term.name
    if isinstance(term, Prim):
        return _print_prim(term)
    raise TypeError(f"not a term: {term!r}")


def print_type(type_: Type) -> str:
    return str(type_)


def print_definition(definition: Definition) -> str:
    text = f"%{definition.name}"
    if definition.type is not None:
        text += f" : {print_type(definition.type)}"
    text += f" = {print_term(definition.term)}"
    if definition.module is not None:
        text += f" from {json.dumps(definition.module)}"
    return text


def print_program(program: Program, notes: Mapping[str, list[str]] | None = None) -> str:
    """The canonical text; `notes` adds `# ...` comment lines above the named definitions (still parses)."""
    notes = notes or {}
    header = f"program {json.dumps(program.name)}"
    header += "".join(f" {key}={json.dumps(value)}" for key, value in program.attrs)
    groups = [
        [header],
        [f"input %{i.name} : {print_type(i.type)}" for i in program.inputs],
        [f"{s.kind} @{s.name} : {print_type(s.type)}" for s in program.state],
        [line for d in program.defs for line in [*(f"# {n}" for n in notes.get(d.name, ())), print_definition(d)]],
    ]
    if program.outputs:
        groups.append(["output " + ", ".join(f"{print_ref(o.ref)} : {print_type(o.type)}" for o in program.outputs)])
    return "\n\n".join("\n".join(group) for group in groups if group) + "\n"
