"""Full-size training steps (`benchmarks/memory.py --fake`) as a markdown section: the peak and what holds it.

One table per model and shape: every mode and variant (full loss, chunked loss, chunked + optimizer in backward),
the step's peak, its ratio to the conventional full-loss step (what a user runs without bwsk), the categories at
the peak, and the FLOPs per step with their ratio to conventional in the same variant. With CPU times (real steps
at reduced depth and length, timed side by side) a second table puts the noisy time ratios beside the counted FLOP
ratios at the same reduced size.

The section starts at `SECTION_HEADING` and runs to the next level-2 heading or the end (`with_section` replaces
it alone; every other byte of the document is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bwsk.render.markdown import heading_section, replace_heading_section
from bwsk.training.modes.fake_step import StepRecord

SECTION_HEADING = "## Full size: one training step, measured exactly"
GIB = 2**30
BASELINE = ("conventional", "full", "AdamW")  # mode, loss, optimizer: the step a user runs without bwsk


@dataclass(frozen=True)
class CpuTime:
    """A mode's real step on the cpu at reduced size: median seconds, and its ratio to conventional timed beside it."""

    model: str
    mode: str
    layers: int
    seq: int
    seconds: float
    ratio: float
    flops_ratio: float  # counted at the same reduced size


def variant(step: StepRecord) -> str:
    """The step's variant as the fit tables name it."""
    if step.loss == "full":
        return "full loss"
    return "chunked + opt. in backward" if step.optimizer == "AdamW in backward" else "chunked loss"


def table_lines(steps: Sequence[StepRecord]) -> list[str]:
    """One row per step: GiB at the peak by category, the peak against the baseline, FLOPs against conventional."""
    lines = [
        "| model | batch x seq | mode | variant | peak GiB | x baseline | parameters | gradients | optimizer | "
        "activations | temporaries | other | TFLOP | FLOPs x conv |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        baseline = _find(steps, s, *BASELINE)
        conventional = _find(steps, s, "conventional", s.loss, s.optimizer)
        c = s.peak_by_category
        cells = [c["Parameter"], c["Gradient"], c["Optstate"], c["Activation"], c["Temp"], c["Buffer"] + c["Other"]]
        lines.append(
            f"| {s.model} | {s.batch} x {s.seq} | {s.mode} | {variant(s)} | {s.peak_bytes / GIB:.2f} | "
            f"{_ratio(s.peak_bytes, baseline and baseline.peak_bytes, '.0%')} | "
            + " | ".join(f"{b / GIB:.2f}" for b in cells)
            + f" | {s.flops / 1e12:.1f} | {_ratio(s.flops, conventional and conventional.flops, '.2f')} |"
        )
    return lines


def cpu_time_lines(times: Sequence[CpuTime]) -> list[str]:
    """The reduced-size real steps: FLOPs counted against seconds timed, both as ratios to conventional."""
    lines = ["| model | blocks x seq | mode | FLOPs x conv | cpu time x conv | cpu s/step |", "|---|---:|---|---:|---:|---:|"]
    for t in times:
        lines.append(f"| {t.model} | {t.layers} x {t.seq} | {t.mode} | {t.flops_ratio:.2f} | {t.ratio:.2f} | {t.seconds:.2f} |")
    return lines


def section(steps: Sequence[StepRecord], times: Sequence[CpuTime], command: str) -> str:
    """The markdown section: what was measured and how to read it, the table, and the cpu times when measured."""
    first = steps[0]
    lines = [
        SECTION_HEADING,
        "",
        f"Written by `{command}`.",
        "",
        "Each row is one training step of the full-size model (forward, next-token loss, backward, AdamW; the second "
        "step, so AdamW's state exists) run under FakeTensorMode with MemTracker: every tensor has its real shape, dtype "
        f"and storage size but no values, so the bytes are exact and nothing is computed ({first.dtype} autocast, sdpa "
        "attention on the cpu kernels, no KV cache, batch x seq tokens). The fake and the real step count the same "
        "bytes per category on small models (`tests/training/modes/test_fake_step.py`). Variants: *full loss* (the "
        "B x T x V logits and their cross-entropy), *chunked loss* (the LM head's loss a chunk of tokens at a time, the "
        "trainer's default), *chunked + opt. in backward* (also AdamW stepped per parameter inside the backward, "
        "`bwsk-train --optimizer-in-backward`, no gradient clipping). *x baseline*: the peak as a share of the "
        "conventional full-loss step's, what the model costs without bwsk. GiB (2^30 bytes) of each category alive at "
        "the step's peak: *temporaries* are the backward's working tensors (gradients of activations, a recomputed "
        "block's activations), *other* MemTracker's buffers and untracked bytes. FLOPs: matrix products and attention "
        "(`torch.utils.flop_counter`), forward, backward and every recompute, as a ratio to conventional with the same "
        "loss and optimizer.",
        "",
        *table_lines(steps),
    ]
    if times:
        lines += [
            "",
            f"Cost measured, not only counted: real fp32 steps of {times[0].model} cut to {times[0].layers} blocks at batch 1 x "
            f"{times[0].seq} (full width and vocabulary, random weights; fp32 because this cpu emulates bf16 matrix "
            "products), each mode's median of interleaved timed steps "
            "on this shared cpu beside the FLOPs counted for that same reduced step. Cpu times are noisy and a cpu "
            "spends relatively more time outside matrix products than a GPU; they bound the counted ratios, they do "
            "not replace GPU times (`bash benchmarks/gpu.sh` when a GPU is lent).",
            "",
            *cpu_time_lines(times),
        ]
    return "\n".join(lines) + "\n"


def with_section(existing: str | None, new_section: str, title: str) -> str:
    """`existing` with its full-size section replaced by `new_section` (see `replace_heading_section`)."""
    return replace_heading_section(existing, SECTION_HEADING, new_section, title)


def section_of(existing: str | None) -> str | None:
    """The full-size section of a document, or None."""
    return heading_section(existing, SECTION_HEADING)


def _find(steps: Sequence[StepRecord], like: StepRecord, mode: str, loss: str, optimizer: str) -> StepRecord | None:
    return next(
        (
            s
            for s in steps
            if (s.model, s.batch, s.seq, s.mode, s.loss, s.optimizer) == (like.model, like.batch, like.seq, mode, loss, optimizer)
        ),
        None,
    )


def _ratio(value: float, reference: float | None, spec: str) -> str:
    return "n/a" if not reference else format(value / reference, spec)
