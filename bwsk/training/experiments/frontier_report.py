"""The memory/recompute frontier (`benchmarks/memory.py --frontier`) as a markdown section and a plot.

Per model one table: each budget's byte target, then for the analyzed plan and torch's SAC ILP the activation bytes
the step kept (measured, and as a share of conventional's) and the FLOPs backward's recompute added (counted), and
the analyzed plan's recompute as a share of the ILP's; checkpoint, reversible and conventional below. `verdict` checks
the target: at every budget from 20% to 80% of conventional the analyzed plan recomputes no more than the ILP, and at
one budget at least 20% less.

The section starts at `SECTION_HEADING` and runs to the next level-2 heading or the end (`with_section` replaces it
alone).
"""

from __future__ import annotations

from collections.abc import Sequence

from bwsk.render.figures import new_figure, png_bytes
from bwsk.render.markdown import replace_heading_section
from bwsk.render.units import human_bytes, human_flops
from bwsk.training.modes.frontier import ANALYZED, TORCH_SAC, FrontierPoint

SECTION_HEADING = "## The memory/recompute frontier: the analyzed plan against torch's SAC ILP"
TARGET_RANGE = (0.2, 0.8)
TARGET_SAVING = 0.2


def table_lines(points: Sequence[FrontierPoint]) -> list[str]:
    """The markdown table of one model's points."""
    lines = [
        "| budget | target | analyzed: kept (share) | analyzed: recompute | torch SAC ILP: kept (share) "
        "| torch SAC ILP: recompute | analyzed recompute / ILP's |",
        "|---|---|---|---|---|---|---|",
    ]
    for budget in sorted({p.budget for p in points if p.budget is not None}):
        ours, theirs = _at(points, ANALYZED, budget), _at(points, TORCH_SAC, budget)
        lines.append(
            f"| {budget:g} | {human_bytes(ours.target_bytes)} | {_kept(ours)} | {human_flops(ours.recompute_flops)} | {_kept(theirs)} "
            f"| {human_flops(theirs.recompute_flops)} | {_share(ours.recompute_flops, theirs.recompute_flops)} |"
        )
    for p in points:
        if p.budget is None:
            lines.append(f"| {p.planner} | | {_kept(p)} | {human_flops(p.recompute_flops)} | | | |")
    return lines


def verdict(points: Sequence[FrontierPoint]) -> tuple[bool, str]:
    """Whether one model's points meet the target (see the module docstring), and a sentence saying how."""
    low, high = TARGET_RANGE
    pairs = [
        (b, _at(points, ANALYZED, b).recompute_flops, _at(points, TORCH_SAC, b).recompute_flops)
        for b in sorted({p.budget for p in points if p.budget is not None})
        if low <= b <= high
    ]
    if not pairs:
        return False, "no budget between 20% and 80% lies above the floor"
    above = [b for b, ours, theirs in pairs if ours > theirs]
    saving = [b for b, ours, theirs in pairs if theirs > 0 and ours <= (1 - TARGET_SAVING) * theirs]
    met = not above and bool(saving)
    said = (
        f"no more recompute than the ILP at {len(pairs) - len(above)} of {len(pairs)} budgets"
        + (f" (more at {', '.join(f'{b:g}' for b in above)})" if above else "")
        + f"; at least {TARGET_SAVING:.0%} less at {', '.join(f'{b:g}' for b in saving) or 'none'}"
    )
    return met, said


def section(groups: dict[str, list[FrontierPoint]], command: str, plot_path: str | None, shape: str) -> str:
    """The markdown section: how the points were measured, one table and verdict per model, and the plot."""
    lines = [
        SECTION_HEADING,
        "",
        f"Written by `{command}`.",
        "",
        f"Each row is one forward and backward of the full model ({shape}; chunked loss, no optimizer step) with each block "
        "checkpointed under a selective policy. *analyzed* is bwsk's plan (`bwsk.training.modes.selective`), made from "
        "one recorded forward of the model as it trains: each block's operators, their bytes and FLOPs, which outputs "
        "autograd saves, and where backward's recompute stops. *torch SAC ILP* is torch's own planner for the same "
        "blocks and byte target: `SACEstimator`'s per-operator statistics and `get_optimal_checkpointing_policy_per_module`'s "
        "integer program (pulp's CBC), given each operator's counted FLOPs as its runtime so that it minimises what "
        "the table reports (`bwsk.training.modes.torch_sac`). *kept*: the activations alive after the forward "
        "(MemTracker), with their share of conventional's; *recompute*: the step's FLOPs minus conventional's "
        "(`FlopCounterMode`: products and attention; norms, softmax and elementwise operators count none). A budget "
        "is a fraction of conventional activation memory; both planners get the same byte target and floor (what "
        "enters each block and what is saved outside them). Reversible's recompute is its rebuild, of a different "
        "function of the same weights. The analyzed prediction is of the model's own forward, whose LM head runs over "
        "the full logits (under autocast it keeps a bf16 copy of the head's weight); the chunked loss keeps less "
        "outside the blocks, so what the step keeps sits below the target by that difference. Fake and real steps count the same bytes and "
        "FLOPs at every point (`tests/training/modes/test_frontier.py`; without `--fake` the command measures real steps).",
        "",
    ]
    for model, points in groups.items():
        met, said = verdict(points)
        lines += [f"### {model}", "", *table_lines(points), "", f"Target {'met' if met else 'missed'}: {said}.", ""]
    if plot_path:
        lines += [f"![activation bytes against recompute FLOPs]({plot_path})", ""]
    return "\n".join(lines)


def plot(groups: dict[str, list[FrontierPoint]]) -> bytes:
    """The frontier as PNG bytes: per model, recompute TFLOP against the kept share of conventional, a line per
    planner and a marker per mode."""
    figure, axes = new_figure(1, len(groups), (5.5 * len(groups), 4.2))
    for axis, (model, points) in zip(axes[0], groups.items()):
        for planner, style in ((ANALYZED, "o-"), (TORCH_SAC, "s--")):
            chosen = sorted((p for p in points if p.planner == planner), key=lambda p: p.budget)
            axis.plot([p.fraction for p in chosen], [p.recompute_flops / 1e12 for p in chosen], style, label=planner)
        for p in points:
            if p.budget is None:
                axis.plot([p.fraction], [p.recompute_flops / 1e12], "D", label=p.planner)
        axis.set(title=model, xlabel="activations kept / conventional's (measured)", ylabel="recompute TFLOP (counted)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return png_bytes(figure, dpi=110)


def with_section(existing: str | None, new_section: str, title: str) -> str:
    """`existing` with its frontier section replaced by `new_section` (see `replace_heading_section`)."""
    return replace_heading_section(existing, SECTION_HEADING, new_section, title)


def _at(points: Sequence[FrontierPoint], planner: str, budget: float) -> FrontierPoint:
    return next(p for p in points if p.planner == planner and p.budget == budget)


def _kept(point: FrontierPoint) -> str:
    return f"{human_bytes(point.activation_bytes)} ({point.fraction:.0%})"


def _share(value: int, reference: int) -> str:
    return "—" if reference == 0 else f"{value / reference:.2f}"
