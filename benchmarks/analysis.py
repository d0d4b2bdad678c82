"""Analyse every zoo model at full size (meta device, no weights) and write docs/analysis.md.

    python benchmarks/analysis.py [--models ...] [--seq 128] [--out docs/analysis.md] [--svg docs/pythia-410m.svg]

Per model: the S share by primitive calls, FLOPs and activation bytes (and by
FLOPs at the training level, which must agree); S-phases and K-barriers per
layer; communication points per layer for each sharding axis; predicted
activation memory per training mode; analysis time; and which calls the
phase-level soundness check (`classify.composite`) moved between S and K, with
the shares before and after. Also renders the collapsed phase graph of
Pythia-410M to SVG.

The text replaces the section "zoo-analysis" of the document. A document
without that section (or no document) is rewritten as this section followed
by the other scripts' sections it holds (coverage, collectives, outside
architectures), so no script erases another's table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from bwsk.atomic import write_atomic
from bwsk.frontend import zoo
from bwsk.frontend.compile import compile_source
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify import Classify, Share, classify_call, read_outputs, share_of
from bwsk.passes.coordinate import Coordinate
from bwsk.passes.couple import Couple
from bwsk.passes.manager import PassManager
from bwsk.passes.memory import Memory
from bwsk.passes.partition import Partition
from bwsk.passes.pipeline import analyze
from bwsk.render.markdown import replace_section, section, sections

SECTION = "zoo-analysis"
WRITER = "benchmarks/analysis.py"

HEADER = """# What bwsk finds in the zoo

Written by `python benchmarks/analysis.py` (full-size architectures, meta device,
no weights, batch 1 x {seq} tokens or one 224x224 image, Core ATen). Every number
below is computed from the lowered program; nothing is looked up by module name.

- **S share** counts primitive calls judged information-preserving (injective in
  the activation they transform), by number of calls, by FLOPs, and by bytes of
  activations they produce.
- **S-phases / K-barriers per layer** come from the `partition` pass (a typical
  layer: the median over numbered layers).
- **Comm. per layer** is the number of calls in a typical layer that need
  communication when activations are sharded along batch / sequence / hidden
  (`coordinate` pass).
- **Coupling candidates** (`couple` pass): residual pairs that could become
  reversible blocks y1 = x1 + F(x2), y2 = x2 + G(y1). Pre-LN models have one per
  layer (GPT-NeoX's parallel residual splits into F = MLP, G = attention). Post-LN
  models (BERT, OPT-350M, whose config sets `do_layer_norm_before=False`) put a
  LayerNorm between consecutive residuals, so no pair couples without moving the
  norm, and their reversible column equals the analyzed one.

**What S means, and why the shares moved.** An S-phase claims that its outputs
determine each activation input, the phase's other inputs held fixed (what
rebuilding a phase's input from its output needs). Calls are judged one operand
at a time, which composes along chains but not where two operands of one call
are computed from the same value: at the Core ATen level SiLU is `sigmoid` (S)
then `mul` (S), yet silu(-0.5) = silu(-2.5088); GPT-2's tanh GELU, x*x, x - x
and x @ x.T were S call by call too, and so were attention scores q @ k.T where
q and k are projected from one input (x -> -x gives the same scores) and post-LN
residuals x + attention(x). Such a call is now K with the shared ancestor
named, unless a composite rule proves the whole injective: a rotary
embedding q*cos + rotate_half(q)*sin rotates pairs of elements (S, though the
slices of rotate_half alone are K), and x + 0.044715*x^3 is strictly increasing.
So the MLP activation is one K call at both levels (before: K as `aten.silu` at
the training level, S as `sigmoid` + `mul` at the core level), and FLOPs of
`linear` and `matmul` count their matmuls, so per-layer shares agree across
levels (the training-level column below). The table "Phase-level soundness"
counts, per model, the calls that moved and the shares before and after.
`bwsk-compile MODEL --tiny --check-classification` checks every S-phase as one
function: full-rank Jacobian of its outputs in each input and no collision
along single elements (results for the zoo and 22 outside architectures in
the section written by `benchmarks/outside.py`).
"""

COMPARISON = """
## Against the earlier research code

The earlier BWSK code reported a **67% / 33%** S/K split for Pythia-410M. bwsk
finds **{ops:.0%} S by calls, {flops:.0%} by FLOPs, {nbytes:.0%} by activation
bytes**. The numbers differ because they measure different things, and because
several of the old verdicts were wrong:

- the old figure counted `nn.Module` leaf classes from a lookup table (a
  `Dropout(p=0)` weighed as much as a 1024x4096 `Linear`); bwsk counts every
  ATen call in the exported graph, including the functional ones the table never
  saw (residual adds, softmax, the attention matmuls, reshapes);
- LayerNorm was called preserving: it removes the mean of every row (K);
- down-projections (`dense_4h_to_h`, 4096 -> 1024) were called preserving: a
  rank <= 1024 map of 4096 inputs erases 3072 dimensions per row (K);
- slicing (the split of each head into rotary and pass-through parts) was
  called preserving: it drops elements (K); GELU is not monotone (K), while tanh and sigmoid, called erasing,
  are strictly monotone (S);
- the many reshapes, permutes and residual adds are S, which is why the share by
  calls is high while the share by FLOPs is lower: the erasing calls include the
  expensive down-projection and attention matmuls.
"""


def typical(counts: list[int]) -> int:
    return sorted(counts)[len(counts) // 2] if counts else 0


def moved_calls(analysis: Analysis) -> tuple[Share, Counter]:
    """The S share under per-call verdicts alone, and the calls the phase-level check moved: (target, from, to, why) -> count.

    Per-call verdicts are `classify_call`'s, before `composite` makes them sound for whole phases; `why`
    drops the value a shared-ancestor reason names and names a composite by its kind, so one cause counts once.
    """
    flow = analysis.flow
    read = read_outputs(flow)
    per_call = {call.index: classify_call(flow, call, read) for call in flow.calls}
    composite = {m: c.name for c in analysis.result(Classify).composites for m in c.members}
    moved: Counter = Counter()
    for call in flow.calls:
        before, after = per_call[call.index], analysis.classes[call.index]
        if before.kind != after.kind:
            why = after.reason.split(": ", 1)[1] if after.reason.startswith("operands share ancestor") else after.reason
            if call.index in composite:
                why = f"part of an injective composite: {composite[call.index]}"
            moved[(call.target, before.kind, after.kind, why)] += 1
    return share_of(flow.calls, per_call, flow), moved


def training_flops_share(name: str, seq: int) -> float:
    """S share by FLOPs of the same model lowered to the training-level IR."""
    program = compile_source(name, device="meta", seq=seq, progress=False, level="training").program
    return PassManager([Classify]).run(Analysis.of(program)).result(Classify).overall.by_flops


def analyse(name: str, seq: int) -> dict:
    start = time.perf_counter()
    compiled = compile_source(name, device="meta", seq=seq, progress=False)
    exported = time.perf_counter() - start
    start = time.perf_counter()
    analysis = analyze(compiled.program)
    elapsed = time.perf_counter() - start
    classify = analysis.result(Classify)
    partition = analysis.result(Partition)
    layers = {layer: counts for layer, counts in partition.per_layer().items() if layer[-1:].isdigit()}
    row = {
        "model": name,
        "calls": classify.overall.calls,
        "ops": classify.overall.by_ops,
        "flops": classify.overall.by_flops,
        "bytes": classify.overall.by_bytes,
        "layers": len(layers),
        "s_phases": typical([c["S"] for c in layers.values()]),
        "k_barriers": typical([c["K"] for c in layers.values()]),
        "couplings": len(analysis.result(Couple)),
        "seconds": elapsed,
        "export_seconds": exported,
        "analysis": analysis,
        "training_flops": training_flops_share(name, seq),
    }
    row["per_call"], row["moved"] = moved_calls(analysis)
    summary = analysis.result(Coordinate).summary
    for axis in ("batch", "sequence", "hidden"):
        per_layer = [n for layer, n in summary.get(axis, {}).get("per_layer", {}).items() if layer[-1:].isdigit()]
        row[f"comm_{axis}"] = typical(per_layer)
    row["memory"] = {mode: total.total for mode, total in analysis.result(Memory).modes.items()}
    return row


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def render(rows: list[dict], seq: int) -> str:
    lines = [
        HEADER.format(seq=seq),
        "| model | calls | S by calls | S by FLOPs | S by bytes | S by FLOPs, training level | layers | S-phases / layer "
        "| K-barriers / layer | comm. per layer (batch / seq / hidden) | coupling candidates | analysis s |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        comm = " / ".join(str(r.get(f"comm_{a}", "-")) for a in ("batch", "sequence", "hidden"))
        lines.append(
            f"| {r['model']} | {r['calls']:,} | {r['ops']:.1%} | {r['flops']:.1%} | {r['bytes']:.1%} | {r['training_flops']:.1%} | "
            f"{r['layers']} | {r['s_phases']} | {r['k_barriers']} | {comm} | {r['couplings']} | {r['seconds']:.2f} |"
        )
    lines += moves(rows)
    if any("memory" in r for r in rows):
        modes = list(next(r for r in rows if "memory" in r)["memory"])
        lines += [
            "",
            f"## Predicted activation memory (MiB, batch 1 x {seq})",
            "",
            "What backward keeps, per training mode, from the `memory` pass (stored values plus the peak of",
            "what one rebuild holds). conventional: everything autograd saves; checkpoint: per-layer",
            "checkpointing; analyzed: store K-barrier outputs, recompute S-phases; reversible: the coupling",
            "candidates of `couple` made reversible (activations inside F and G rebuilt by inversion).",
            "",
            "| model | " + " | ".join(modes) + " |",
            "|" + "---|" * (len(modes) + 1),
        ]
        for r in rows:
            if "memory" in r:
                lines.append(f"| {r['model']} | " + " | ".join(mib(r["memory"][m]) for m in modes) + " |")
    pythia = next((r for r in rows if r["model"] == "pythia-410m"), None)
    if pythia:
        lines.append(COMPARISON.format(ops=pythia["ops"], flops=pythia["flops"], nbytes=pythia["bytes"]))
        erasing = Counter()
        analysis = pythia["analysis"]
        for call in analysis.calls:
            verdict = analysis.classes[call.index]
            if verdict.kind == "K" and call.module.startswith("gpt_neox.layers.0"):
                erasing[(call.target, verdict.reason)] += 1
        lines += ["", "K calls in one Pythia-410M layer:", "", "| operator | reason | calls |", "|---|---|---|"]
        lines += [f"| `{t}` | {reason} | {n} |" for (t, reason), n in erasing.most_common()]
    return "\n".join(lines) + "\n"


def moves(rows: list[dict]) -> list[str]:
    """The before/after table of phase-level soundness and every kind of move across the zoo."""
    lines = [
        "",
        "## Phase-level soundness: the shares before and after",
        "",
        "Before: every call's own verdict (`classify_call`, one operand at a time, the others held fixed). After: the",
        "verdicts `classify` reports, made sound for whole S-phases by `classify.composite` (the table above).",
        "",
        "| model | S by calls, before -> after | S by FLOPs | S by bytes | calls S -> K | calls K -> S |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        before: Share = r["per_call"]
        to_k = sum(n for (_, old, new, _), n in r["moved"].items() if (old, new) == ("S", "K"))
        to_s = sum(n for (_, old, new, _), n in r["moved"].items() if (old, new) == ("K", "S"))
        lines.append(
            f"| {r['model']} | {before.by_ops:.1%} -> {r['ops']:.1%} | {before.by_flops:.1%} -> {r['flops']:.1%} | "
            f"{before.by_bytes:.1%} -> {r['bytes']:.1%} | {to_k} | {to_s} |"
        )
    calls: Counter = Counter()
    models: dict[tuple, list[str]] = defaultdict(list)
    for r in rows:
        for key, n in r["moved"].items():
            calls[key] += n
            models[key].append(r["model"])
    lines += ["", "Every move, over the whole zoo:", "", "| operator | move | why | calls | models |", "|---|---|---|---|---|"]
    for (target, old, new, why), n in calls.most_common():
        lines.append(f"| `{target}` | {old} -> {new} | {why.replace('|', '/')} | {n} | {', '.join(models[(target, old, new, why)])} |")
    return lines


def document(previous: str | None, body: str) -> str:
    """`previous` with its zoo-analysis section replaced; without one, this section then the other scripts' sections."""
    if previous is not None and f"<!-- {SECTION}: " in previous:
        return replace_section(previous, SECTION, body, WRITER)
    return "\n\n".join([section(SECTION, body, WRITER), *sections(previous or "")]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=zoo.names())
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--out", default="docs/analysis.md")
    parser.add_argument("--svg", default="docs/pythia-410m.svg")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for name in args.models:
        row = analyse(name, args.seq)
        rows.append(row)
        print(
            f"{name}: {row['calls']} calls, S {row['ops']:.1%} / {row['flops']:.1%} / {row['bytes']:.1%}, analysis {row['seconds']:.2f} s",
            flush=True,
        )
    previous = Path(args.out).read_text() if Path(args.out).exists() else None
    write_atomic(args.out, document(previous, render(rows, args.seq)), force=True)
    print(f"wrote {args.out}")
    pythia = next((r for r in rows if r["model"] == "pythia-410m"), None)
    if pythia and args.svg:
        from bwsk.render.graph import to_svg

        start = time.perf_counter()
        svg = to_svg(pythia["analysis"], collapse="layers")
        print(f"svg (collapsed) in {time.perf_counter() - start:.2f} s")
        write_atomic(args.svg, svg, force=True)
        print(f"wrote {args.svg}")


if __name__ == "__main__":
    main()
