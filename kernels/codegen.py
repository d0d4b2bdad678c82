"""Emit the Triton source text of a model's seam kernels from the templates.

The text is a pure function of the kernel plans: the same plans give the same bytes
(so the cache names the file by its hash), and a header says which blocks of which
model each kernel family serves. Pattern choices (norm, weight, bias, eps) are baked
into the text; nothing is decided at run time but the sizes.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict
from string import Template

from bwsk.kernels import templates
from bwsk.kernels.patterns import KernelPlan, SeamPattern

DIRECTIONS = {"forward": "+", "rebuild": "-"}


def emit_module(plans: list[KernelPlan], *, title: str = "") -> str:
    """The Python source of a module holding the kernel family of every plan, in the order given."""
    lines = [title] if title else []
    lines += [f"{plan.pattern.name}: {len(plan.users)} seam{'s' if len(plan.users) != 1 else ''}" for plan in plans]
    patterns = "".join(f"    {plan.pattern.name!r}: {asdict(plan.pattern)!r},\n" for plan in plans)
    text = Template(templates.MODULE_HEADER).substitute(summary="\n".join(lines) or "No seams.", patterns=patterns)
    return text + "".join(emit_family(plan) for plan in plans)


def emit_family(plan: KernelPlan) -> str:
    """Comment header, forward and rebuild kernels, and (for a normalised seam) the backward kernel."""
    pattern = plan.pattern
    users = "".join(f"#   {use}\n" for use in plan.users) or "#   (no model: generated for the runtime)\n"
    text = Template(templates.FAMILY_HEADER).substitute(family=pattern.name, arithmetic=pattern.describe(), users=users)
    for direction in DIRECTIONS:
        text += _seam_kernel(pattern, direction)
    if pattern.norm != "none":
        text += _backward_kernel(pattern)
    return text


def _weight_args(pattern: SeamPattern) -> str:
    return ("W, " if pattern.weight else "") + ("B, " if pattern.bias else "")


def _statistics(pattern: SeamPattern, indent: str) -> str:
    return textwrap.indent(Template(templates.STATISTICS[pattern.norm]).substitute(eps=repr(float(pattern.eps))), indent)


def _seam_kernel(pattern: SeamPattern, direction: str) -> str:
    sign = DIRECTIONS[direction]
    if direction == "forward":
        docstring = (
            "y = x + f: OUT = SRC + BRANCH."
            if pattern.norm == "none"
            else f"y = x + f; n = {pattern.norm}(y): OUT = SRC + BRANCH, NORMED = norm(OUT)."
        )
    else:
        docstring = (
            "x = y - f: OUT = SRC - BRANCH."
            if pattern.norm == "none"
            else f"x = y - f; n = {pattern.norm}(x): OUT = SRC - BRANCH, NORMED = norm(OUT)."
        )
    if pattern.norm == "none":
        normalise = ""
    else:
        affine = (templates.AFFINE_WEIGHT if pattern.weight else "") + (templates.AFFINE_BIAS if pattern.bias else "")
        normalise = Template(templates.NORMALISE).substitute(statistics=_statistics(pattern, ""), affine=affine)
    return Template(templates.SEAM_KERNEL).substitute(
        family=pattern.name,
        direction=direction,
        weight_args=_weight_args(pattern) if pattern.norm != "none" else "",
        normed_arg="NORMED, " if pattern.norm != "none" else "",
        docstring=docstring,
        sign=sign,
        normalise=normalise,
    )


def _backward_kernel(pattern: SeamPattern) -> str:
    setup = (templates.BACKWARD_WEIGHT_SETUP if pattern.weight else "") + (templates.BACKWARD_BIAS_SETUP if pattern.bias else "")
    accumulate = (templates.BACKWARD_BIAS_ACCUMULATE if pattern.bias else "") + (
        templates.BACKWARD_WEIGHT_ACCUMULATE if pattern.weight else ""
    )
    store = (templates.BACKWARD_WEIGHT_STORE if pattern.weight else "") + (templates.BACKWARD_BIAS_STORE if pattern.bias else "")
    partials = ("GRAD_WEIGHT_PARTIAL, " if pattern.weight else "") + ("GRAD_BIAS_PARTIAL, " if pattern.bias else "")
    return Template(templates.BACKWARD_KERNEL).substitute(
        family=pattern.name,
        norm=pattern.norm,
        weight_arg="W, " if pattern.weight else "",
        partial_args=partials,
        backward_setup=setup,
        statistics=_statistics(pattern, "    "),
        backward_accumulate=accumulate,
        input_gradient=templates.INPUT_GRADIENT[pattern.norm],
        backward_store=store,
    )
