"""What fits (`bwsk.training.experiments.memory_fit`) as a markdown section, a table, and a plot of peak against length.

The section starts at `SECTION_HEADING` and runs to the next level-2 heading or the end, so a document holds it
beside other sections and has it replaced alone (`with_section`); the rest of the document is kept byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bwsk.render.figures import new_figure, png_bytes
from bwsk.render.markdown import heading_section, replace_heading_section
from bwsk.training.experiments.memory_fit import FIT_SEQ, SEQ_UNIT, VARIANTS, Fit
from bwsk.training.modes.fake_step import StepRecord

SECTION_HEADING = "## What fits: longest sequence and largest batch per memory budget"
GIB = 2**30
STACKED = {  # plotted category: MemTracker's categories in it
    "parameters": ("Parameter", "Buffer"),
    "gradients": ("Gradient",),
    "optimizer state": ("Optstate",),
    "activations": ("Activation",),
    "temporaries": ("Temp", "Other"),
}
PLOTTED_VARIANT = "chunked loss"  # the trainer's default step


def budget_label(size: int) -> str:
    """24 GiB as "24GiB"; a size that is no whole GiB in bytes."""
    return f"{size // GIB}GiB" if size % GIB == 0 else f"{size}B"


def answer(fit: Fit) -> str:
    """The fit as a cell: "4096", "≥ 2048" at the cap, "none" when the smallest size does not fit."""
    if fit.size is None:
        return "none"
    return f"≥ {fit.size}" if fit.capped else str(fit.size)


def table_lines(fits: Sequence[Fit]) -> list[str]:
    """One row per model, mode and variant: the longest sequence at batch 1, the largest batch at seq FIT_SEQ, per budget."""
    budgets = sorted({f.budget for f in fits})
    labels = [budget_label(b) for b in budgets]
    lines = [
        "| model | mode | variant | "
        + " | ".join(f"seq @ batch 1, {b}" for b in labels)
        + " | "
        + " | ".join(f"batch @ seq {FIT_SEQ}, {b}" for b in labels)
        + " | steps measured |",
        "|---|---|---|" + "---:|" * (2 * len(budgets) + 1),
    ]
    rows: dict[tuple[str, str, str], dict[tuple[str, int], Fit]] = {}
    for fit in fits:
        rows.setdefault((fit.model, fit.mode, fit.variant), {})[fit.axis, fit.budget] = fit
    for (model, mode, variant), cells in rows.items():
        values = [answer(cells[axis, b]) if (axis, b) in cells else "n/a" for axis in ("seq", "batch") for b in budgets]
        steps = sum(f.measurements for f in cells.values())
        lines.append(f"| {model} | {mode} | {variant} | " + " | ".join(values) + f" | {steps} |")
    return lines


def section(
    fits: Sequence[Fit],
    steps: Sequence[StepRecord],
    command: str,
    seconds: float,
    caps: dict[str, int | None],
    plot_path: str | None,
    doc_path: str,
) -> str:
    """The markdown section: how it was found, the table, the plot (linked relative to the document)."""
    first = steps[0]
    limits = ", ".join(f"{model} {cap}" if cap else f"{model} none" for model, cap in caps.items())
    lines = [
        SECTION_HEADING,
        "",
        f"Written by `{command}` ({len(steps)} fake steps, {seconds / 60:.0f} min on a shared cpu).",
        "",
        f"Every number is a measured training step (forward, loss, backward, AdamW) under FakeTensorMode with MemTracker "
        f"(`benchmarks/memory.py --fake`): exact bytes, no weights, {first.dtype} autocast, sdpa attention on the cpu kernels, "
        "no KV cache. Variants: *full loss* (the B x T x V logits), *chunked loss* (the LM head's loss a chunk of tokens at "
        "a time, the trainer's default), *chunked + opt. in backward* (also AdamW stepped per parameter inside the backward, "
        "`--optimizer-in-backward`, no gradient clipping). A cell is the longest sequence (multiple of "
        f"{SEQ_UNIT} tokens) at batch 1, or the largest batch at {FIT_SEQ} tokens, whose step peak is at most the budget "
        "(GiB = 2^30 bytes, the whole step: parameters, gradients, optimizer state, activations, temporaries).",
        "",
        "How it was found: the peak is a maximum of polynomials in the size, at most quadratic in sequence length and "
        "linear in batch, so a polynomial of that degree through the measured points nearest the budget predicts where "
        "the peak reaches it; that size is measured, and the bracket (largest size measured to fit, smallest measured not "
        f"to) narrows until it is one step wide ({SEQ_UNIT} tokens, 1 sequence). So each answer was measured to fit and the "
        f"next size up was measured not to, except at the cap: sequences are searched up to a cap ({limits}: the model's "
        'maximum positions unless `--positions` extends them), and "≥ N" means the cap itself fits. *Steps measured*: '
        "steps that row's searches measured (shared between budgets and between the two searches). Fits are exact for this step on the cpu kernels; a GPU "
        "step adds its allocator's fragmentation and its kernels' workspaces, so leave headroom.",
        "",
        *table_lines(fits),
    ]
    if plot_path:
        relative = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(doc_path)))
        lines += [
            "",
            f"Peak against sequence length at batch 1, {first.model}, {PLOTTED_VARIANT} (the points the searches measured), "
            "stacked by the category each byte held at the peak; the budgets as lines.",
            "",
            f"![peak of a training step against sequence length per mode, by category]({relative})",
        ]
    return "\n".join(lines) + "\n"


def plot(steps: Sequence[StepRecord], budgets: Sequence[int]) -> bytes:
    """PNG bytes: one panel per mode, the peak at batch 1 against sequence length stacked by category (`STACKED`)."""
    chunked, in_backward = VARIANTS[PLOTTED_VARIANT]
    chosen = [s for s in steps if s.batch == 1 and (s.loss == "chunked") == chunked and (s.optimizer == "AdamW in backward") == in_backward]
    model = chosen[0].model if chosen else "no model"
    chosen = [s for s in chosen if s.model == model]
    modes = list(dict.fromkeys(s.mode for s in chosen))
    figure, grid = new_figure(1, max(len(modes), 1), (4.6 * max(len(modes), 1), 4.2), sharey=True)
    axes = grid[0]
    for axis, mode in zip(axes, modes):
        points = sorted((s for s in chosen if s.mode == mode), key=lambda s: s.seq)
        xs = [s.seq for s in points]
        layers = [[sum(s.peak_by_category[c] for c in categories) / GIB for s in points] for categories in STACKED.values()]
        axis.stackplot(xs, layers, labels=list(STACKED), alpha=0.85)
        axis.plot(xs, [s.peak_bytes / GIB for s in points], "k.", markersize=4)
        for index, limit in enumerate(sorted(budgets)):
            axis.axhline(limit / GIB, color="k", linestyle=("--", ":", "-.")[index % 3], linewidth=1, label=budget_label(limit))
        axis.set_xscale("log", base=2)
        axis.set_title(f"{model}: {mode}", fontsize="medium")
        axis.set_xlabel("sequence length (batch 1)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("peak of the training step (GiB)")
    axes[0].legend(fontsize="small", loc="upper left")
    return png_bytes(figure)


def with_section(existing: str | None, new_section: str, title: str) -> str:
    """`existing` with its fit section replaced by `new_section` (see `bwsk.render.markdown.replace_heading_section`)."""
    return replace_heading_section(existing, SECTION_HEADING, new_section, title)


def section_of(existing: str | None) -> str | None:
    """The fit section of a document, or None."""
    return heading_section(existing, SECTION_HEADING)
