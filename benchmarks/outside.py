"""`--check-classification` on architectures nobody here wrote, and on the zoo, at tiny width; write the table.

    python benchmarks/outside.py [--models NAME ...] [--doc docs/analysis.md] [--no-doc]

Each outside architecture is built from a small transformers config (random weights, one or two
layers, hidden 64, sequence 8, 32x32 images), exported and lowered to Core ATen as
`bwsk.lower_module` does, keeping the state tensors (the S-phases run with the model's own
weights, buffers and constants, as `bwsk-compile` runs them), and checked as `bwsk-compile --check-classification` checks: every distinct rule application against
the numerical oracle, then every S-phase as one function. Zoo models are compiled as
`bwsk-compile NAME --tiny --layers 1 --seq 8`. Per model: whether it lowered, the outcomes of both
checks, and the seconds each step took. A model that fails to build or export is reported with
the error (outside bwsk's reach when torch.export or transformers refuse it). The table replaces
the section "outside-architectures" of the document (appended when it has none).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwsk.atomic import write_atomic
from bwsk.errors import first_line
from bwsk.frontend import zoo
from bwsk.frontend.compile import at_level, compile_source, state_tensors
from bwsk.frontend.lowering import program_from_export
from bwsk.frontend.tensor_outputs import TensorOutputs, export, traceable
from bwsk.ir.program import Program
from bwsk.passes.analysis import Analysis
from bwsk.passes.classify.check import check_verdicts
from bwsk.passes.classify.phase_check import check_phases
from bwsk.passes.dataflow import trace
from bwsk.passes.manager import PassManager
from bwsk.render.markdown import replace_section

SECTION = "outside-architectures"
SEQ = 8
TOKENS = dict(vocab_size=256, max_position_embeddings=64)
SPECIAL = dict(vocab_size=256, bos_token_id=255, eos_token_id=255)  # defaults (50256) lie outside the tiny vocabulary
DECODER = dict(TOKENS, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4)
ENCODER = dict(DECODER, type_vocab_size=2)


@dataclass(frozen=True)
class Architecture:
    """A transformers model class and the config fields that make it tiny; `inputs` overrides the usual example inputs."""

    name: str
    config: str
    model: str
    fields: dict[str, Any]
    inputs: str = "auto"  # "auto": token ids or pixel values by the model's main input; "features": Whisper's mel frames


ARCHITECTURES = (
    Architecture("Qwen2", "Qwen2Config", "Qwen2ForCausalLM", dict(DECODER, num_key_value_heads=2)),
    Architecture("Phi-3", "Phi3Config", "Phi3ForCausalLM", dict(DECODER, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    Architecture(
        "Gemma2", "Gemma2Config", "Gemma2ForCausalLM", dict(DECODER, num_key_value_heads=2, head_dim=16, pad_token_id=0, sliding_window=4)
    ),
    Architecture("Falcon", "FalconConfig", "FalconForCausalLM", dict(TOKENS, hidden_size=64, num_hidden_layers=1, num_attention_heads=4)),
    Architecture(
        "Falcon (new decoder)",
        "FalconConfig",
        "FalconForCausalLM",
        dict(TOKENS, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True),
    ),
    Architecture("GPT-J", "GPTJConfig", "GPTJForCausalLM", dict(SPECIAL, n_positions=64, n_embd=64, n_layer=1, n_head=4, rotary_dim=8)),
    Architecture("BLOOM", "BloomConfig", "BloomForCausalLM", dict(vocab_size=256, hidden_size=64, n_layer=1, n_head=4)),
    Architecture(
        "GPT-Neo",
        "GPTNeoConfig",
        "GPTNeoForCausalLM",
        dict(TOKENS, **SPECIAL, hidden_size=64, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4),
    ),
    Architecture("GPTBigCode", "GPTBigCodeConfig", "GPTBigCodeForCausalLM", dict(SPECIAL, n_positions=64, n_embd=64, n_layer=1, n_head=4)),
    Architecture("StableLM", "StableLmConfig", "StableLmForCausalLM", dict(DECODER, num_key_value_heads=4)),
    Architecture("OLMo-2", "Olmo2Config", "Olmo2ForCausalLM", dict(DECODER, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    Architecture(
        "T5 encoder", "T5Config", "T5EncoderModel", dict(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4)
    ),
    Architecture("RoBERTa", "RobertaConfig", "RobertaModel", ENCODER),
    Architecture("DistilBERT", "DistilBertConfig", "DistilBertModel", dict(TOKENS, dim=64, n_layers=1, n_heads=4, hidden_dim=128)),
    Architecture(
        "DeBERTa-v2",
        "DebertaV2Config",
        "DebertaV2Model",
        dict(ENCODER, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=16),
    ),
    Architecture("ALBERT", "AlbertConfig", "AlbertModel", dict(ENCODER, embedding_size=32)),
    Architecture("ELECTRA", "ElectraConfig", "ElectraModel", dict(ENCODER, embedding_size=32)),
    Architecture(
        "Swin",
        "SwinConfig",
        "SwinModel",
        dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
    ),
    Architecture("ConvNeXt", "ConvNextConfig", "ConvNextModel", dict(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
    Architecture(
        "MobileViT",
        "MobileViTConfig",
        "MobileViTModel",
        dict(
            image_size=32,
            patch_size=2,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=2,
            expand_ratio=2.0,
        ),
    ),
    Architecture(
        "Whisper encoder",
        "WhisperConfig",
        "WhisperEncoder",
        dict(
            vocab_size=256,
            num_mel_bins=16,
            d_model=64,
            encoder_layers=1,
            encoder_attention_heads=4,
            encoder_ffn_dim=128,
            max_source_positions=SEQ,
            decoder_layers=1,
            decoder_attention_heads=4,
            decoder_ffn_dim=128,
        ),
        inputs="features",
    ),
    Architecture("Mamba", "MambaConfig", "MambaModel", dict(vocab_size=256, hidden_size=64, state_size=8, num_hidden_layers=1)),
)


@dataclass
class Outcome:
    """One model's run: `error` is set when building, exporting or lowering failed; `crash` when a check raised."""

    name: str
    source: str
    calls: int = 0
    verdicts: Counter = field(default_factory=Counter)
    phases: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    crash: str | None = None
    lower_seconds: float = 0.0
    check_seconds: float = 0.0


def architecture(name: str) -> Architecture:
    found = {a.name: a for a in ARCHITECTURES}
    if name not in found:
        raise SystemExit(f"unknown architecture {name!r}; known: {', '.join(found)} and the zoo names")
    return found[name]


def build(spec: Architecture) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The tiny model in eval mode (eager attention where the class has a choice) and its example inputs."""
    import transformers

    if spec.model == "WhisperEncoder":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as model_class
    else:
        model_class = getattr(transformers, spec.model)
    config = getattr(transformers, spec.config)(**spec.fields)
    torch.manual_seed(0)
    model = model_class._from_config(config, attn_implementation="eager").eval()
    if spec.inputs == "features":  # the encoder's two convolutions halve 2 * positions frames
        frames = 2 * config.max_source_positions
        return model, (torch.randn(1, config.num_mel_bins, frames, generator=torch.Generator().manual_seed(0)),)
    return model, zoo.model_inputs(model, seq=SEQ)


def check(program: Program, weights: Mapping[str, torch.Tensor], outcome: Outcome) -> None:
    """Both halves of `--check-classification` (S-phases run with the model's own state), counted into `outcome`."""
    start = time.perf_counter()
    try:
        rows = check_verdicts(trace(program))
        outcome.verdicts.update(row[-1] for row in rows)
        outcome.failures += [
            f"`{op}` {kind}: {result}: {evidence}" for op, kind, _, evidence, result in rows if result in ("FAILED", "undecided")
        ]
        phases = check_phases(PassManager(["partition"]).run(Analysis.of(program, weights=weights)))
        outcome.phases.update(c.outcome for c in phases)
        outcome.failures += [
            f"S-phase {c.phase} ({c.layer}) in {c.input}: {c.outcome}: {c.evidence}" for c in phases if c.outcome in ("FAILED", "undecided")
        ]
    except Exception as error:  # noqa: BLE001 - the benchmark reports a crash instead of stopping
        outcome.crash = f"{type(error).__name__}: {first_line(error)[:160]}"
    outcome.check_seconds = time.perf_counter() - start


def run_outside(spec: Architecture) -> Outcome:
    outcome = Outcome(spec.name, f"transformers `{spec.model}`")
    start = time.perf_counter()
    try:
        model, args = build(spec)
        exported = at_level(export(model, args), "core")
        prefix = "model" if isinstance(traceable(model), TensorOutputs) else ""
        program = program_from_export(exported, name=spec.name, level="core", strip_prefix=prefix)
        weights = state_tensors(exported, prefix)
    except Exception as error:  # noqa: BLE001 - reported as "did not lower", with the reason
        outcome.error = f"{type(error).__name__}: {first_line(error)[:160]}"
        return outcome
    outcome.lower_seconds = time.perf_counter() - start
    outcome.calls = len(trace(program).calls)
    check(program, weights, outcome)
    return outcome


def run_zoo(name: str) -> Outcome:
    outcome = Outcome(name, "zoo")
    start = time.perf_counter()
    compiled = compile_source(name, tiny=True, layers=1, seq=SEQ, device="cpu", progress=False)
    outcome.lower_seconds = time.perf_counter() - start
    outcome.calls = len(trace(compiled.program).calls)
    check(compiled.program, dict(compiled.state), outcome)
    return outcome


def table(outcomes: list[Outcome]) -> str:
    """The Markdown section: one row per model, then every failure and every model that did not lower."""
    checked = [o for o in outcomes if o.error is None]
    lines = [
        "## `--check-classification` on outside architectures and the zoo",
        "",
        f"Written by `python benchmarks/outside.py`. Outside architectures are built from small transformers configs "
        f"(random weights, 1 layer, 2 for GPT-Neo's global + local pair, hidden 64, sequence {SEQ}, 32x32 images) and lowered "
        "to Core ATen as `bwsk.lower_module` does; zoo models as "
        f"`bwsk-compile NAME --tiny --layers 1 --seq {SEQ}`. The S-phases run with each model's own (random) weights, buffers "
        "and constants. Verdicts: each "
        "distinct rule application checked by the oracle (ok / FAILED / undecided / unknown; skipped: an operand above "
        "4096 elements). S-phases: each S-phase checked as one function of each float activation input (ok / FAILED / undecided: "
        "rank deficient at the model's own weights only, full rank at random ones / skipped: "
        f"integer inputs). {len(checked)} of {len(outcomes)} models lowered; "
        f"{sum(o.crash is not None for o in checked)} check crashed; "
        f"{sum(o.verdicts['FAILED'] + o.phases['FAILED'] for o in checked)} failed verdicts.",
        "",
        "| model | source | calls | verdicts ok / FAILED / undecided / unknown / skipped | S-phases ok / FAILED / undecided / skipped "
        "| lower s | check s |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error is not None:
            lines.append(f"| {o.name} | {o.source} | did not lower | - | - | - | - |")
            continue
        v, p = o.verdicts, o.phases
        verdicts = "crashed" if o.crash else f"{v['ok']} / {v['FAILED']} / {v['undecided']} / {v['unknown']} / {v['skipped']}"
        phases = "crashed" if o.crash else f"{p['ok']} / {p['FAILED']} / {p['undecided']} / {p['skipped']}"
        lines.append(f"| {o.name} | {o.source} | {o.calls:,} | {verdicts} | {phases} | {o.lower_seconds:.1f} | {o.check_seconds:.1f} |")
    notes = [f"- {o.name}: did not lower ({o.error})" for o in outcomes if o.error]
    notes += [f"- {o.name}: the check crashed ({o.crash})" for o in outcomes if o.crash]
    notes += [f"- {o.name}: {failure}" for o in outcomes for failure in o.failures]
    if notes:
        lines += ["", *[n.replace("|", "/") for n in notes]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[a.name for a in ARCHITECTURES] + zoo.names(), metavar="NAME")
    parser.add_argument("--doc", default="docs/analysis.md", type=Path)
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    outcomes = []
    for name in args.models:
        outcome = run_zoo(name) if name in zoo.names() else run_outside(architecture(name))
        outcomes.append(outcome)
        state = outcome.error or outcome.crash or f"verdicts {dict(outcome.verdicts)}, phases {dict(outcome.phases)}"
        print(f"{name}: {state}; lower {outcome.lower_seconds:.1f} s, check {outcome.check_seconds:.1f} s", flush=True)
        for failure in outcome.failures:
            print(f"    {failure}", flush=True)
    section = table(outcomes)
    if not args.no_doc:
        write_atomic(str(args.doc), replace_section(args.doc.read_text(), SECTION, section, "benchmarks/outside.py"), force=True)
    print(section)


if __name__ == "__main__":
    main()
