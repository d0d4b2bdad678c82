"""Emit the Triton source text of a model's seam kernels from the templates.

The text is a pure function of the kernel plans: the same plans give the same bytes
(so the cache names the file by its hash), and a header says which blocks of which
model each kernel family serves. Pattern choices (norm, weight, bias, eps) are baked
into the text; nothing is decided at run time but the sizes. Names from the input
(model, blocks) are written only through `bwsk.kernels.source` (identifiers in code,
escaped mentions in comments and docstrings), so no name can add a line of code.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from string import Template
from typing import Protocol

from bwsk.kernels import templates
from bwsk.kernels.patterns import KernelPlan, SeamPattern, SeamUse, plan_kernels
from bwsk.kernels.source import identifier, mention

DIRECTIONS = {"forward": "+", "rebuild": "-"}


class Seam(Protocol):
    """A seam found in a model (`bwsk.passes.seams.Seam`): its pattern, its block and the stream it updates."""

    @property
    def pattern(self) -> SeamPattern: ...
    @property
    def block(self) -> str: ...
    @property
    def stream(self) -> str: ...


def emit_model(model: str, seams: Sequence[Seam]) -> str:
    """The module of `model`'s seam kernels, one family per distinct pattern, titled with the model's name."""
    plans = plan_kernels((seam.pattern, SeamUse(model, seam.block, seam.stream)) for seam in seams)
    blocks = len({seam.block for seam in seams})
    families = f"famil{'ies' if len(plans) != 1 else 'y'}"
    title = f"Model {mention(model)}: {blocks} coupling block{'s' * (blocks != 1)}, {len(seams)} seams, {len(plans)} kernel {families}."
    return emit_module(plans, title=title)


def emit_module(plans: list[KernelPlan], *, title: str = "") -> str:
    """The Python source of a module holding the kernel family of every plan, in the order given.

    `title` is bwsk's own text (it goes into the docstring as it is); input names in it must be `mention`s.
    """
    lines = [title] if title else []
    lines += [f"{identifier(plan.pattern.name)}: {len(plan.users)} seam{'s' if len(plan.users) != 1 else ''}" for plan in plans]
    patterns = "".join(f"    {plan.pattern.name!r}: {asdict(plan.pattern)!r},\n" for plan in plans)
    text = Template(templates.MODULE_HEADER).substitute(summary="\n".join(lines) or "No seams.", patterns=patterns)
    return text + "".join(emit_family(plan) for plan in plans)


def _user_line(use: SeamUse) -> str:
    return f"#   {mention(use.model)} {mention(use.block)} ({identifier(use.seam)})\n"


def emit_family(plan: KernelPlan) -> str:
    """Comment header, forward and rebuild kernels, and (for a normalised seam) the backward kernel."""
    pattern = plan.pattern
    users = "".join(_user_line(use) for use in plan.users) or "#   (no model: generated for the runtime)\n"
    text = Template(templates.FAMILY_HEADER).substitute(family=identifier(pattern.name), arithmetic=pattern.describe(), users=users)
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
        family=identifier(pattern.name),
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
        family=identifier(pattern.name),
        norm=pattern.norm,
        weight_arg="W, " if pattern.weight else "",
        partial_args=partials,
        backward_setup=setup,
        statistics=_statistics(pattern, "    "),
        backward_accumulate=accumulate,
        input_gradient=templates.INPUT_GRADIENT[pattern.norm],
        backward_store=store,
    )
