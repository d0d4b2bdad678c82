"""Memory traffic over stream-sized tensors in one reversible training step: torch seams beside Triton seams.

    python benchmarks/seam_traffic.py                                  # pythia-410m width, 2 layers, 1 x 64 tokens
    python benchmarks/seam_traffic.py --model smollm-135m --layers 4 --json out.json

Counted, not timed (so it runs on a CPU, Triton under its interpreter): every ATen call
of the step is counted with the bytes of the tensors it reads and writes (views and
allocations move nothing and are skipped): on a GPU each call is at least one kernel
pass over those bytes, so this is a lower bound of the step's memory traffic. A Triton
seam launch counts the tensors it reads and writes. Besides the total, the bytes in
tensors of the stream's size (batch x tokens x width) are counted apart, and shown in
stream passes (one read or write of one fp32 stream). The difference between the two
rows is what fusing the seams saves; everything else (attention, MLP, embedding) is the
same in both. Time needs a GPU (benchmarks/gpu.sh).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bwsk.atomic import write_atomic
from bwsk.cli.arguments import ArgumentParser
from bwsk.errors import BwskError
from bwsk.frontend import zoo

SEAMS = ("torch", "triton")
WRITTEN_KEYWORDS = ("out", "grad_src")  # a launcher's destination buffers: written (counted with its result), not read


@dataclass
class Traffic:
    """Traffic of one step: ATen calls and Triton seam launches, all their bytes and those in stream-sized tensors."""

    seams: str
    fused_norms: int
    pass_bytes: int  # one read or write of one fp32 stream
    aten_calls: int = 0
    triton_launches: int = 0
    total_bytes: int = 0
    stream_bytes: int = 0


class StepTraffic(TorchDispatchMode):
    """Counts every ATen call's tensor bytes, and apart those in tensors of `numel` elements (the stream's size)."""

    def __init__(self, numel: int, traffic: Traffic):
        super().__init__()
        self.numel, self.traffic, self.paused = numel, traffic, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused and not func.is_view and not func.__name__.startswith(("empty", "new_empty", "detach", "alias")):
            self.traffic.aten_calls += 1
            self.add((args, kwargs), out)
        return out

    def add(self, read, written) -> None:
        """Count the tensors read and those written, each once per side (an in-place call reads and writes its tensor)."""
        for tree in (read, written):
            tensors = {id(t): t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)}.values()
            self.traffic.total_bytes += sum(t.numel() * t.element_size() for t in tensors)
            self.traffic.stream_bytes += sum(t.numel() * t.element_size() for t in tensors if t.numel() == self.numel)

    def launch(self, function: Callable, *args, **kwargs):
        """Run a Triton launcher uncounted by ATen (the interpreter's own copies are not GPU traffic); count its operands."""
        self.paused = True
        try:
            out = function(*args, **kwargs)
        finally:
            self.paused = False
        self.traffic.triton_launches += 1
        self.add((args, {name: value for name, value in kwargs.items() if name not in WRITTEN_KEYWORDS}), out)
        return out


def measure(model_name: str, layers: int, batch: int, seq: int, seams: str) -> Traffic:
    """One reversible step (forward, loss, backward) of `model_name` with `seams`, its stream-sized traffic counted."""
    from bwsk.kernels import runtime
    from bwsk.training.language_model import lm_loss, logits_of
    from bwsk.training.reversible.convert import make_reversible, reversible_runtime

    model = make_reversible(zoo.build(model_name, layers=layers, device="cpu"), kernels=seams, measure_gap=False).train()
    (ids,) = zoo.model_inputs(model, batch=batch, seq=seq)
    numel = batch * seq * model.config.hidden_size
    traffic = Traffic(seams, reversible_runtime(model).fused_norms, numel * 4)
    counter = StepTraffic(numel, traffic)
    originals = {name: getattr(runtime, name) for name in ("launch_seam", "launch_backward")}
    try:
        for name, function in originals.items():
            setattr(runtime, name, functools.partial(counter.launch, function))
        with counter:
            lm_loss(logits_of(model(ids)), ids).backward()
    finally:
        for name, function in originals.items():
            setattr(runtime, name, function)
    return traffic


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default="pythia-410m", choices=zoo.names(), help="zoo model at full width (default pythia-410m)")
    parser.add_argument("--layers", type=int, default=2, help="blocks (default 2; traffic per block does not depend on depth)")
    parser.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    parser.add_argument("--seq", type=int, default=64, help="tokens per sequence (default 64)")
    parser.add_argument("--json", metavar="OUT", help="write both rows as JSON")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    if min(args.layers, args.batch, args.seq) < 1:
        parser.error("--layers, --batch and --seq must be at least 1")
    if args.json and os.path.exists(args.json) and not args.force:
        parser.error(f"{args.json}: already exists (pass --force to replace it)")
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the generated kernels are imported, on first use
    try:
        rows = [measure(args.model, args.layers, args.batch, args.seq, seams) for seams in SEAMS]
    except BwskError as error:
        parser.error(str(error))
    torch_row, triton_row = rows
    stream = torch_row.pass_bytes
    print(f"{args.model}, {args.layers} blocks, {args.batch} x {args.seq} tokens: memory traffic of one reversible step (counted)")
    for row in rows:
        print(
            f"  {row.seams:6} seams: {row.aten_calls:5} ATen calls + {row.triton_launches:3} Triton launches: "
            f"{row.total_bytes / 2**20:9.2f} MiB, of which stream-sized {row.stream_bytes / stream:6.0f} stream passes "
            f"({row.fused_norms} norms in the seams)"
        )
    saved = torch_row.total_bytes - triton_row.total_bytes
    print(
        f"  fused seams: {saved / torch_row.total_bytes:.1%} of the step's traffic, "
        f"{(torch_row.stream_bytes - triton_row.stream_bytes) / stream / args.layers:.1f} stream passes per block"
    )
    if args.json:
        document = {"model": args.model, "layers": args.layers, "batch": args.batch, "seq": args.seq, "rows": [asdict(r) for r in rows]}
        write_atomic(args.json, json.dumps(document, indent=1) + "\n", force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
