"""One LM head's next-token loss, forward and backward, computed three ways: bytes at the peak, and agreement.

    python benchmarks/lm_loss.py                                     # 1024 tokens, hidden 128, vocab 4096, fp32
    python benchmarks/lm_loss.py --tokens 2048 --hidden 256 --vocab 16384 --dtype bf16 --json lm_loss.json  # minutes
    python benchmarks/lm_loss.py --fake                              # Pythia-410M's head: 4096 x 1024 -> 50304, bf16
    python benchmarks/lm_loss.py --fake --tokens 8192 --hidden 4096 --vocab 128256   # Llama-3-8B's head

One sequence of --tokens hidden states (a leaf, like the model's last hidden states) meets one output head (a
vocab x hidden fp32 weight, no bias); every 8th label is IGNORE_INDEX. The loss runs forward and backward under
MemTracker (torch.distributed._tools.mem_tracker), which counts the bytes of every tensor torch allocates, by
category at the peak: Parameter (the head's weight), Activation (allocated in the forward), Temp (allocated in the
backward), Other (the hidden states and labels). Gradients count where they are allocated (MemTracker files the
weight's under Gradient only when the backward hands it over, after every peak here). The losses:

  full     the B x T x V logits, then torch's cross-entropy (`lm_loss`): what a model computes without help;
  chunked  bwsk's `chunked_lm_loss`: projection and cross-entropy a chunk of tokens at a time;
  liger    Liger-Kernel's fused linear cross-entropy (the optional extra: pip install -e '.[liger]'), called as
           its function (`LigerFusedLinearCrossEntropyLoss` is a module around it) on the labels already shifted
           as bwsk shifts them; it computes its gradients in the forward.

Each row gives the peak bytes of the step, the categories at that peak, and the largest absolute difference of the
loss and of each gradient (hidden states, weight) to the full row's. --dtype bf16 runs under bf16 autocast (the
weight stays fp32), as the trainer does. On the cpu Liger's Triton kernels run in Triton's interpreter
(TRITON_INTERPRET=1, set here where it is unset): the interpreter copies each kernel's operands into numpy arrays,
which are not torch allocations and so not counted; only the tensors Liger allocates through torch are. --fake
measures at full size under FakeTensorMode (every tensor has its shape and dtype, none has values: no differences),
full and chunked only: Liger's Triton kernels cannot run on fake tensors. Outputs are never overwritten without
--force.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from bwsk.atomic import check_destination, write_atomic
from bwsk.cli.arguments import ArgumentParser, positive_int
from bwsk.errors import BwskError, one_line
from bwsk.render.units import human_bytes
from bwsk.training.language_model import IGNORE_INDEX, autocast, chunked_lm_loss, lm_loss

DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast
REAL_SIZE, FAKE_SIZE = (1024, 128, 4096), (4096, 1024, 50304)  # tokens, hidden, vocab (FAKE_SIZE: Pythia-410M's head)
IGNORED_EVERY = 8  # every 8th label is IGNORE_INDEX
CATEGORIES = ("Parameter", "Activation", "Temp", "Other")
LABELS = {
    "full": "full logits + torch cross-entropy",
    "chunked": "bwsk chunked_lm_loss",
    "liger": "Liger fused linear cross-entropy",
}
LIGER_ON_CPU = (
    "liger runs in Triton's interpreter (TRITON_INTERPRET=1): its numpy copies of the kernels' operands are not torch "
    "allocations and are not counted, only the tensors Liger allocates through torch"
)
LIGER_FALLBACK = (
    "liger on the cpu adds each chunk's weight gradient through weight-sized temporaries (its fallback, "
    "torch.mm(...).float()); on CUDA (compute capability 8+) with bf16 logits it accumulates in place (addmm, out_dtype)"
)
LIGER_FAKE = "liger left out: its Triton kernels cannot run on fake tensors (and it reads the count of scored labels as a value)"
LIGER_MISSING = "liger left out: liger_kernel is not installed (pip install -e '.[liger]')"

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (hidden, labels, weight) -> loss


@dataclass(frozen=True)
class Setup:
    """What is measured: the head's shape, the precision (a `DTYPES` name), fake tensors or not, bwsk's chunk."""

    tokens: int
    hidden: int
    vocab: int
    dtype: str
    fake: bool
    chunk_tokens: int | None  # None: bwsk's default


@dataclass(frozen=True)
class Row:
    """One loss: the step's peak, the categories at that peak (bytes), its loss, its differences to the full row's."""

    loss: str
    peak_bytes: int
    peak_by_category: dict[str, int]
    loss_value: float | None
    max_loss_difference: float | None
    max_hidden_grad_difference: float | None
    max_weight_grad_difference: float | None


def full_loss(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return lm_loss(F.linear(hidden, weight), labels)


def liger_loss(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Liger's loss of the same logits: targets aligned with the hidden states (bwsk's shift), the last one ignored."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)
    return liger_fused_linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), ignore_index=IGNORE_INDEX)


def losses(chunk_tokens: int | None) -> dict[str, LossFunction]:
    """Each row's loss function; `chunk_tokens` is bwsk's chunk (None: its default)."""
    return {"full": full_loss, "chunked": functools.partial(chunked_lm_loss, chunk_tokens=chunk_tokens), "liger": liger_loss}


def head_inputs(tokens: int, hidden: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """(hidden states 1 x tokens x hidden, requiring grad; labels, every `IGNORED_EVERY`th ignored; the head, an
    nn.Linear without bias): the same values on every call with the same arguments."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        states = torch.randn(1, tokens, hidden).requires_grad_()
        labels = torch.randint(vocab, (1, tokens))
        labels[:, ::IGNORED_EVERY] = IGNORE_INDEX
        head = nn.Linear(hidden, vocab, bias=False)
    return states, labels, head


def measure(loss_of: LossFunction, setup: Setup) -> tuple[dict[str, int], list[torch.Tensor]]:
    """The peak of the loss `loss_of` forward and backward (bytes per category and "Total"), and [loss, hidden's gradient,
    the weight's gradient], made from fresh inputs (fake ones inside FakeTensorMode)."""
    from torch.distributed._tools.mem_tracker import MemTracker  # imports triton: after `liger_notes` (see there)

    states, labels, head = head_inputs(setup.tokens, setup.hidden, setup.vocab)
    tracker = MemTracker()
    tracker.track_external(head, states, labels)
    with tracker:
        with autocast(states.device, DTYPES[setup.dtype]):
            loss = loss_of(states, labels, head.weight)
        loss.backward()
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    return {str(getattr(key, "value", key)): int(size) for key, size in peak.items()}, [loss.detach(), states.grad, head.weight.grad]


def max_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max())


def run(names: list[str], setup: Setup) -> list[Row]:
    """A row per loss in `names` (the first the reference, "full"); differences only for real tensors."""
    rows, reference = [], None
    for name in names:
        with FakeTensorMode() if setup.fake else contextlib.nullcontext():
            peak, values = measure(losses(setup.chunk_tokens)[name], setup)
        if reference is None:
            reference = values
        differences = [None] * 3 if setup.fake else [max_difference(got, want) for got, want in zip(values, reference)]
        categories = {category: peak.get(category, 0) for category in CATEGORIES}
        rows.append(Row(name, peak.get("Total", 0), categories, None if setup.fake else float(values[0]), *differences))
    return rows


def table(rows: list[Row]) -> list[str]:
    """The rows as a markdown table: bytes at the peak, and the differences to the full logits' loss and gradients."""

    def difference(value: float | None) -> str:
        return "—" if value is None else f"{value:.1e}"

    lines = [
        f"| loss | peak | {' | '.join(CATEGORIES)} | loss diff | grad diff (hidden) | grad diff (weight) |",
        "|---|" + "---:|" * (len(CATEGORIES) + 4),
    ]
    for row in rows:
        cells = [human_bytes(row.peak_bytes), *(human_bytes(row.peak_by_category[c]) for c in CATEGORIES)]
        cells += [difference(d) for d in (row.max_loss_difference, row.max_hidden_grad_difference, row.max_weight_grad_difference)]
        lines.append(f"| {row.loss}: {LABELS[row.loss]} | " + " | ".join(cells) + " |")
    return lines


def parser() -> argparse.ArgumentParser:
    cli = ArgumentParser(
        prog="benchmarks/lm_loss.py",
        description="\n\n".join(__doc__.split("\n\n")[2:]),
        epilog="examples:\n" + "\n".join(line.strip() for line in __doc__.split("\n\n")[1].splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--tokens", type=positive_int, help=f"tokens in the sequence (default {REAL_SIZE[0]}; with --fake {FAKE_SIZE[0]})")
    cli.add_argument("--hidden", type=positive_int, help=f"hidden width (default {REAL_SIZE[1]}; with --fake {FAKE_SIZE[1]})")
    cli.add_argument("--vocab", type=positive_int, help=f"vocabulary size (default {REAL_SIZE[2]}; with --fake {FAKE_SIZE[2]})")
    cli.add_argument("--dtype", choices=DTYPES, help="fp32, or bf16 autocast over the fp32 weight (default fp32; with --fake bf16)")
    cli.add_argument(
        "--chunk-tokens",
        type=positive_int,
        help="tokens per chunk of bwsk's loss (default: its own, at least 256; Liger picks its chunk from the shapes)",
    )
    cli.add_argument("--fake", action="store_true", help="full size under FakeTensorMode: bytes without values, full and chunked only")
    cli.add_argument("--json", metavar="OUT", help="write the rows and the notes as JSON")
    cli.add_argument("--force", action="store_true", help="replace an existing --json file")
    return cli


def liger_notes(fake: bool) -> tuple[bool, list[str]]:
    """(whether the liger row runs, the notes saying how or why not); on the cpu it needs Triton's interpreter."""
    if fake:
        return False, [LIGER_FAKE]
    if importlib.util.find_spec("liger_kernel") is None:
        return False, [LIGER_MISSING]
    interpret = os.environ.get("TRITON_INTERPRET")
    if interpret not in (None, "1"):
        raise BwskError(f"TRITON_INTERPRET={interpret}: Liger's Triton kernels run on cpu tensors only under TRITON_INTERPRET=1")
    if interpret is None and "triton.language" in sys.modules:  # its own @jit functions (tl.max) are compiled ones then
        raise BwskError("triton was imported before TRITON_INTERPRET=1 was set: set it in the environment for Liger on the cpu")
    os.environ["TRITON_INTERPRET"] = "1"  # read when a kernel is decorated: triton's own, liger_kernel's (at their import)
    return True, [LIGER_ON_CPU, LIGER_FALLBACK]


def setup_of(args: argparse.Namespace) -> Setup:
    """The command line's setup, defaults filled in (`FAKE_SIZE` and bf16 with --fake, else `REAL_SIZE` and fp32)."""
    sizes = (given or default for given, default in zip((args.tokens, args.hidden, args.vocab), FAKE_SIZE if args.fake else REAL_SIZE))
    return Setup(*sizes, args.dtype or ("bf16" if args.fake else "fp32"), args.fake, args.chunk_tokens)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = "python benchmarks/lm_loss.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    setup = setup_of(args)
    try:
        if args.json:
            check_destination(args.json, force=args.force)
        if setup.tokens < 2:
            raise BwskError("--tokens must be at least 2 (the last token predicts nothing)")
        with_liger, notes = liger_notes(setup.fake)
        rows = run(["full", "chunked", *(["liger"] if with_liger else [])], setup)
    except BwskError as error:
        print(f"benchmarks/lm_loss.py: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    tensors = "FakeTensorMode" if setup.fake else "real tensors"
    chunk = f"bwsk's chunk {setup.chunk_tokens} tokens" if setup.chunk_tokens else "bwsk's default chunk"
    shape = f"{setup.tokens} tokens x hidden {setup.hidden} -> vocab {setup.vocab}"
    print(f"LM-head loss, forward + backward: {shape}, {setup.dtype}, cpu, {tensors}, {chunk}")
    print("bytes at the step's peak (MemTracker), by category; differences: max |x - full's x|\n")
    print("\n".join(table(rows)))
    print("\n" + "\n".join(f"- {note}" for note in notes))
    if args.json:
        document = {"command": command, **asdict(setup), "device": "cpu", "rows": [asdict(row) for row in rows], "notes": notes}
        write_atomic(args.json, json.dumps(document, indent=1) + "\n", force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
