"""The reversible autograd Function over a segment of coupling blocks.

Forward runs the blocks without building a graph and saves only the segment's
two output streams (and the side inputs, which do not grow with depth).
Backward walks the blocks in reverse; for each it rebuilds G's output from y1
with a local graph, takes G's gradients, subtracts to get x2 = y2 - G(y1), then
the same for F: x1 = y1 - F(x2). Nothing per block is stored, so activation
memory is flat in depth. The rebuilt streams and their gradients are updated in place once
this backward made them (the saved outputs and autograd's incoming gradients are never
written), so one copy of each lives at a time. With fused norms (`Half.lead`) each subtraction also
returns the norm the next rebuilt half starts with, and the seam's norm backward
adds that norm's input gradient to the stream gradient.

Invariants that users of earlier reversible libraries found broken:
- every trainable parameter of the segment is an input of the Function, so it
  gets its gradient even when the streams do not require grad (frozen embeddings);
- the rebuild runs under the autocast state captured in forward and with the
  same per-half RNG seeds (dropout masks are replayed exactly); with float64
  streams the subtraction is exact too, so each half recomputes on the very
  input it saw in forward and the gradients are plain autograd's;
- under a sharding wrapper (FSDP2, `SegmentCall.sharded`) each half holds
  gathered parameter copies only while it runs; the rebuild then accumulates
  their gradients into `.grad` inside backward (so the wrapper's hooks reduce
  them half by half) instead of returning them;
- backward is once-differentiable; a second backward through the same graph
  fails because the saved streams were freed (PyTorch's "backward through the
  graph a second time" error).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from bwsk.training.reversible.coupling import CouplingBlock, StackSeeds, run_blocks
from bwsk.training.reversible.drift import DriftProbe
from bwsk.training.reversible.seams import SeamNorm


@dataclass(frozen=True)
class AutocastState:
    """The autocast settings of one device type, captured in forward and re-entered for the rebuild."""

    device_type: str
    enabled: bool
    dtype: torch.dtype
    cache_enabled: bool

    @classmethod
    def capture(cls, device_type: str) -> AutocastState:
        return cls(
            device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type), torch.is_autocast_cache_enabled()
        )

    def enter(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled, cache_enabled=self.cache_enabled)


@dataclass(frozen=True)
class SideInputs:
    """Side inputs (every block's mask, rotary cos/sin, ...) split into distinct tensors (Function inputs, each once
    however many blocks share it: identity decides) and the structure around them."""

    spec: TreeSpec
    leaves: tuple[Any, ...]  # the non-tensor leaves; None where a tensor goes
    slots: tuple[int | None, ...]  # per leaf, the index of its tensor among the distinct tensors (None: not a tensor)
    count: int  # distinct tensors

    @classmethod
    def split(cls, side: Any) -> tuple[SideInputs, list[torch.Tensor]]:
        leaves, spec = tree_flatten(side)
        slot_of: dict[int, int] = {}
        tensors: list[torch.Tensor] = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor) and id(leaf) not in slot_of:
                slot_of[id(leaf)] = len(tensors)
                tensors.append(leaf)
        slots = tuple(slot_of[id(leaf)] if isinstance(leaf, torch.Tensor) else None for leaf in leaves)
        kept = tuple(None if slot is not None else leaf for leaf, slot in zip(leaves, slots))
        return cls(spec, kept, slots, len(tensors)), tensors

    def join(self, tensors: Sequence[torch.Tensor]) -> Any:
        return tree_unflatten([leaf if slot is None else tensors[slot] for leaf, slot in zip(self.leaves, self.slots)], self.spec)


@dataclass
class SegmentCall:
    """What one Function call needs besides its tensor inputs: no activations (the output pair is saved with save_for_backward)."""

    blocks: Sequence[CouplingBlock]
    side: SideInputs
    dtype: torch.dtype  # the model's compute dtype (F and G run on streams cast to it)
    seeds: StackSeeds
    autocast: AutocastState
    probe: DriftProbe | None
    parameters: list[torch.nn.Parameter]  # trainable parameters of the blocks, in Function-input order
    sharded: bool = False  # FSDP2 owns the halves' parameters: their gradients are accumulated, not returned


class ReversibleFunction(torch.autograd.Function):
    """apply(call, x1, x2, *side_tensors, *parameters) -> (y1, y2) over `call.blocks`."""

    @staticmethod
    def forward(ctx, call: SegmentCall, x1: torch.Tensor, x2: torch.Tensor, *inputs: torch.Tensor):
        side_tensors = inputs[: call.side.count]
        side = call.side.join([t.detach() for t in side_tensors])
        keep = call.probe.keep if call.probe is not None else None
        x1, x2 = run_blocks(call.blocks, x1.detach(), x2.detach(), side, call.dtype, call.seeds, keep)
        ctx.call = call
        ctx.save_for_backward(*side_tensors)
        # Detached (no reference cycle through the outputs' grad_fn; the version counter is shared): released as the
        # rebuild replaces them, where save_for_backward would hold them to the end of the backward.
        ctx.streams = [x1.detach(), x2.detach()]
        ctx.versions = (x1._version, x2._version)
        return x1, x2

    @staticmethod
    @once_differentiable
    def backward(ctx, dy1: torch.Tensor, dy2: torch.Tensor):
        call: SegmentCall = ctx.call
        side_tensors = ctx.saved_tensors
        if ctx.streams is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time: a reversible segment releases its output streams in its "
                "first backward (call .backward() once per forward)"
            )
        y1, y2 = ctx.streams
        ctx.streams = None
        if (y1._version, y2._version) != ctx.versions:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace operation: an output "
                "stream of a reversible segment was written after the forward, so its inputs cannot be rebuilt"
            )
        side_wants = ctx.needs_input_grad[3 : 3 + call.side.count]
        side_leaves = [t.detach().requires_grad_(wants) for t, wants in zip(side_tensors, side_wants)]
        side = call.side.join(side_leaves)
        side_grad_leaves = [leaf for leaf in side_leaves if leaf.requires_grad]
        slot = {id(p): i for i, p in enumerate(call.parameters)}
        param_grads: list[torch.Tensor | None] = [None] * len(call.parameters)
        side_grads: list[torch.Tensor | None] = [None] * len(side_grad_leaves)

        def accumulate(parameter: torch.Tensor | None, grad: torch.Tensor | None) -> None:
            if grad is not None and id(parameter) in slot:
                i = slot[id(parameter)]
                param_grads[i] = grad if param_grads[i] is None else param_grads[i] + grad

        def local_grad(half, start: torch.Tensor, grad_out: torch.Tensor, block: CouplingBlock, which: int):
            """Run `half` on a leaf copy of its input `start` with a local graph; return (output, d start) and accumulate the rest.

            The leaf is `start` already cast to the compute dtype (the half's first step): d start comes back in that dtype,
            not the stream's, and adding it to the stream gradient promotes it exactly as the cast's backward would."""
            leaf = start.detach().to(call.dtype).requires_grad_(True)
            with torch.enable_grad(), call.autocast.enter(), block.scope(call.seeds, which), _quiet_view_warning(call.sharded):
                # the half's modules see a non-leaf, as in forward (module hooks such as MemTracker's grad hooks need one)
                out = half(leaf.view_as(leaf), side[block.index], call.dtype)
            upstream = grad_out.to(out.dtype)
            if upstream is grad_out and made:  # autograd may hand it back (a side input's gradient) and it is written later
                upstream = upstream.clone()
            if call.sharded:
                return out.detach(), accumulated_grad(out, upstream, leaf)
            params = [p for p in half.parameters() if id(p) in slot]
            grads = torch.autograd.grad(out, (leaf, *params, *side_grad_leaves), upstream, allow_unused=True)
            for p, g in zip(params, grads[1 : 1 + len(params)]):
                accumulate(p, g)
            for i, g in enumerate(grads[1 + len(params) :]):
                if g is not None:
                    side_grads[i] = g if side_grads[i] is None else side_grads[i] + g
            d_start = grads[0] if grads[0] is not None else torch.zeros_like(leaf)
            return out.detach(), d_start

        def into_stream(
            value: torch.Tensor, grad_stream: torch.Tensor, grad_start: torch.Tensor, block: CouplingBlock, norm: SeamNorm | None
        ):
            """The stream gradient plus the half input's, through the seam's norm backward (its weight and bias gradients kept);
            written into `grad_stream` once it is a gradient this backward made (`made`: autograd's incoming ones are left alone)."""
            grad, grad_weight, grad_bias = block.seam.norm_backward(value, grad_stream, grad_start, norm, inplace=made)
            if norm is not None:
                accumulate(norm.weight, grad_weight)
                accumulate(norm.bias, grad_bias)
            return grad

        def accumulated_grad(out: torch.Tensor, grad_out: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
            """Backward of the local graph into every leaf it reaches (the half's gathered parameters included); d stream."""
            torch.autograd.backward(out, grad_out)
            for i, side_leaf in enumerate(side_grad_leaves):
                if side_leaf.grad is not None:
                    side_grads[i] = side_leaf.grad if side_grads[i] is None else side_grads[i] + side_leaf.grad
                    side_leaf.grad = None
            return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)

        blocks = call.blocks
        made = False  # from the second block on, y1, y2, dy1 and dy2 are tensors this backward made: written in place
        n1 = blocks[-1].seam.normalised(y1, blocks[-1].g.lead)  # G's input as the forward seam gave it
        for k in reversed(range(len(blocks))):
            block = blocks[k]
            g, d_n1 = local_grad(block.g, n1, dy2, block, 1)
            dy1 = into_stream(y1, dy1, d_n1, block, block.g.lead)
            y2, n2 = block.seam.subtract(y2, g, block.f.lead, inplace=made)  # x2, F's input
            del g, n1
            f, d_n2 = local_grad(block.f, n2, dy1, block, 0)
            dy2 = into_stream(y2, dy2, d_n2, block, block.f.lead)
            y1, n1 = block.seam.subtract(y1, f, blocks[k - 1].g.lead if k else None, inplace=made)  # x1, the previous G's input
            del f, n2
            if call.probe is not None:
                call.probe.compare(block.index, y1, y2)
            made = True
        side_out = iter(side_grads)
        side_result = [next(side_out) if wants else None for wants in side_wants]
        return (None, dy1, dy2, *side_result, *param_grads)


@contextmanager
def _quiet_view_warning(sharded: bool):
    """Under FSDP2, silence its warning that a sharded module returned a view (an in-place op on it would skip a hook).

    A rebuilt half's output is only read (subtracted from a stream, or differentiated), so the
    warning says nothing about the rebuild; it is silenced there and nowhere else (the filters are
    left untouched without FSDP2).
    """
    if not sharded:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor", category=UserWarning)
        yield
