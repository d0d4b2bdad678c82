"""The depth measurements (`bwsk.training.experiments.depth_drift`) as a markdown section and a plot of the drift per block.

The section starts at `SECTION_HEADING` and runs to the next level-2 heading or the end, so a
document can hold it beside other sections and have it replaced alone (`with_section`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bwsk.render.figures import new_figure, png_bytes
from bwsk.render.markdown import heading_section, replace_heading_section
from bwsk.render.units import MIB
from bwsk.training.experiments.depth_drift import DepthRecord

SECTION_HEADING = "## Depth: gradient error and drift of the rebuild"
EXACT_FLOOR = 1e-17  # where a block rebuilt exactly (error 0) is drawn on the log scale


def section(records: Sequence[DepthRecord], command: str, plot_path: str | None, doc_path: str) -> str:
    """The markdown section: how it was measured, one table per model, the plot (linked relative to the document)."""
    first = records[0]
    lines = [
        SECTION_HEADING,
        "",
        f"Written by `{command}`.",
        "",
        f"GPT-NeoX (parallel residual) at the widths named, batch {first.batch} x {first.seq} tokens, on the cpu. Each stack is "
        "converted with `make_reversible`'s defaults and measured in three set-ups on the same weights and input: **fp32 "
        "streams** (the earlier defaults: one segment, no drift control), **fp32 streams + anchors** (the same streams with "
        "drift control placing anchors and recompute by measurement at conversion, within the memory cap), and **defaults** "
        "(float64 streams, calibrated at conversion, drift monitor on). *Grad error*: global relative error of every parameter's "
        "gradient against plain autograd on the same converted model and streams (`plain_autograd`); targets: 1e-2 under bf16 "
        "autocast, 1e-4 in fp32. *Drift*: relative rebuild error of a block's input pair (all rows). *Stack activations*: "
        "MemTracker bytes the stack holds while its graph lives, and their ratio to two fp32 stream pairs (cap: 3x). *Anchors*: "
        "stored pairs drift control added and their bytes; *recomputed*: blocks it runs under checkpoint instead. Trained: "
        "AdamW steps (lr 3e-4, warmup, cosine, bf16 autocast) on the demo text, under the defaults. Step seconds (a cpu shared "
        "with other work) are one forward and backward with every block's drift measured.",
        "",
        "Reading it: with fp32 streams the rebuild error grows exponentially toward the input, and under bf16 autocast a "
        "1e-7 rounding difference in a rebuilt stream flips bf16 roundings of the next half's input, which the network "
        "amplifies block by block. Anchors shorten the chains but cannot remove the first flip. Float64 streams make the "
        "update y = x + f exact (a half's fp32 or bf16 output fits a 53-bit significand), so subtracting f gives x back bit "
        "for bit: every block's drift is 0 and the gradients equal plain autograd's, for twice the bytes of an fp32 pair per "
        "stored pair.",
    ]
    for model in dict.fromkeys(r.model for r in records):
        lines += ["", f"### {model}", ""]
        lines += table_lines([r for r in records if r.model == model])
    if plot_path:
        relative = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(doc_path)))
        lines += ["", f"![rebuild error per block, fp32 streams against the defaults]({relative})"]
    return "\n".join(lines) + "\n"


def table_lines(records: Sequence[DepthRecord]) -> list[str]:
    lines = [
        "| blocks | weights | precision | set-up | grad error | drift: block 0 | middle | top | stack activations MiB "
        "| x two fp32 pairs | anchors (MiB) | recomputed | step s |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        drift = r.drift or [0.0]
        lines.append(
            f"| {r.layers} | {r.state} | {r.dtype} | {r.variant} | {r.grad_error:.1e} | {drift[0]:.1e} | "
            f"{drift[len(drift) // 2]:.1e} | {drift[-1]:.1e} | {r.stack_activation_bytes / MIB:.2f} | {r.memory_ratio:.2f} | "
            f"{r.anchors} ({r.anchor_bytes / MIB:.2f}) | {r.recomputed_blocks} | {r.step_seconds:.1f} |"
        )
    return lines


def plot(records: Sequence[DepthRecord]) -> bytes:
    """PNG bytes: drift per block (log scale) for each model (rows) and precision (columns), fp32 streams against the defaults."""
    models = list(dict.fromkeys(r.model for r in records))
    precisions = list(dict.fromkeys(r.dtype for r in records))
    figure, panels = new_figure(len(models), len(precisions), (6 * len(precisions), 4 * len(models)))
    depths = sorted({r.layers for r in records})
    colours = {layers: f"C{i}" for i, layers in enumerate(depths)}
    for row, model in zip(panels, models):
        for panel, precision in zip(row, precisions):
            chosen = [r for r in records if r.model == model and r.dtype == precision]
            for r in chosen:
                if r.variant not in ("fp32 streams", "defaults") or not r.drift:
                    continue
                values = [max(e, EXACT_FLOOR) for e in r.drift]
                style = "-" if r.state == "random init" else "--"
                marker = "" if r.variant == "fp32 streams" else "."
                label = f"{r.layers} blocks, {r.state}" + ("" if r.variant == "fp32 streams" else ", defaults")
                panel.semilogy(range(len(values)), values, style, marker=marker, color=colours[r.layers], label=label, alpha=0.9)
            panel.axhline(EXACT_FLOOR, color="grey", lw=0.5)
            panel.set_title(f"{model}, {precision}: fp32 streams (lines) vs defaults (dots at the floor: exactly 0)", fontsize=9)
            panel.set_xlabel("block (0 = next to the input)")
            panel.set_ylabel("relative rebuild error of the input pair")
            panel.grid(alpha=0.3)
            panel.legend(fontsize=7, ncol=2)
    return png_bytes(figure)


def with_section(existing: str | None, new_section: str, title: str) -> str:
    """`existing` with its depth section replaced by `new_section` (see `bwsk.render.markdown.replace_heading_section`)."""
    return replace_heading_section(existing, SECTION_HEADING, new_section, title)


def section_of(existing: str | None) -> str | None:
    """The depth section of a document, or None."""
    return heading_section(existing, SECTION_HEADING)
