"""One forward of a model, recorded per block at the operators a selective-checkpoint policy is shown: the dataflow the
analyzed mode plans on.

    recorded = record_blocks(model, (ids,), dtype=torch.bfloat16)
    recorded.blocks[0][i].op, .made (new storages and their bytes), .flops, .saved, .written
    recorded.stop[0]                  # the last operator of block 0 that backward's recompute runs
    recorded.floor_bytes, recorded.conventional_bytes

The forward runs on fake tensors (`FakeTensorMode`: shapes and storages, no values, no memory; a model already made of
fake tensors runs in its own mode), with gradients on, in the model's own training flag and attention implementation,
under autocast to `dtype` when given, with the KV cache off as the recomputing modes train. Recorded per block, in
dispatch order, each ATen operator except those selective checkpointing never shows its policy (`SAC_IGNORED_OPS`):

  made:     the storages it creates (bytes each); views and in-place operators create none.
  flops:    its FLOPs (`bwsk.training.modes.flops`: products and attention; elementwise operators count none).
  saved:    whether autograd saves one of the storages it made for the block's own backward (a block's output, saved
            by the next block, is that block's input: the floor under checkpointing).
  written:  whether a later in-place operator writes one of them (selective checkpointing cannot cache it: the
            version it checks changes; dropout fills `empty_like` in place).
  stop:     the index of the block's last operator that makes a saved storage: backward's recompute (non-reentrant
            checkpoint, which stops once every saved tensor is back) runs the block's operators up to it and no further.

And for the model: `conventional_bytes`, the distinct storages autograd saves in the forward (parameters and buffers
aside: what conventional training keeps for backward), and `floor_bytes`, what checkpointing every block still keeps:
the storages entering each block (a checkpoint holds its inputs, read or not) and those autograd saves outside the
blocks. Every tensor seen is held until the recording ends, so no storage key is reused within it (fake storages cost
no memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake
from torch.func import functional_call
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import SAC_IGNORED_OPS

from bwsk.training.blocks import block_list
from bwsk.training.kv_cache import cache_off_while_training
from bwsk.training.language_model import autocast
from bwsk.training.modes.flops import operator_flops


@dataclass
class RecordedOp:
    """One operator a block dispatched in forward (see the module docstring for each field)."""

    op: torch._ops.OpOverload
    made: dict[int, int]  # storage key -> bytes
    flops: int
    saved: bool = False
    written: bool = False

    @property
    def nbytes(self) -> int:
        return sum(self.made.values())


@dataclass
class RecordedBlocks:
    """Per block (stack order) its operators and recompute stop; the model's conventional and floor bytes."""

    blocks: list[list[RecordedOp]]
    stop: list[int]
    conventional_bytes: int
    floor_bytes: int
    floor_keys: frozenset[int] = field(default_factory=frozenset)


def storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


class _Recorder(TorchDispatchMode):
    """Records the operators each block dispatches (`block` is the one running, or None) and what they make."""

    def __init__(self, blocks: int, known: dict[int, int]):
        super().__init__()
        self.block: int | None = None
        self.ops: list[list[RecordedOp]] = [[] for _ in range(blocks)]
        self.known = known  # storage key -> bytes of every storage seen so far
        self.alive: list[torch.Tensor] = []

    def see(self, tensors: list[torch.Tensor]) -> dict[int, int]:
        """Mark `tensors`' storages seen; return those new to the recording."""
        new = {}
        for tensor in tensors:
            key = storage_key(tensor)
            if key not in self.known:
                self.known[key] = new[key] = tensor.untyped_storage().nbytes()
        self.alive.extend(tensors)
        return new

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.see(_tensors((args, kwargs)))
        out = func(*args, **kwargs)
        outputs = _tensors(out)
        made = self.see(outputs)
        if self.block is not None and func not in SAC_IGNORED_OPS:
            ops = self.ops[self.block]
            if func._schema.is_mutable:
                written = {storage_key(t) for t in outputs}
                for earlier in ops:
                    earlier.written = earlier.written or not written.isdisjoint(earlier.made)
            ops.append(RecordedOp(func, made, operator_flops(func, args, kwargs, out)))
        return out


def record_blocks(model: nn.Module, example_input: tuple[torch.Tensor, ...], *, dtype: torch.dtype | None = None) -> RecordedBlocks:
    """Record one forward of `model` on `example_input` (see the module docstring); `model` is not changed, except
    that its graph-building calls run without a KV cache from now on (`cache_off_while_training`)."""
    _, layers = block_list(model)
    cache_off_while_training(model)
    weights = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    with fake_weights(model, weights, example_input) as (fakes, fake_input):
        known = {storage_key(t): 0 for t in fakes.values()}
        recorder = _Recorder(len(layers), known)
        entering: set[int] = set()
        saved: set[int] = set()
        saved_in: dict[int | None, set[int]] = {None: set()} | {i: set() for i in range(len(layers))}  # by the block saving

        def enter(index: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                recorder.block = index
                recorder.see(_tensors((args, kwargs)))
                entering.update(storage_key(t) for t in _tensors((args, kwargs)))

            return hook

        def leave(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            recorder.block = None

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            key = storage_key(tensor)
            saved.add(key)
            saved_in[recorder.block].add(key)
            return tensor

        handles = [layer.register_forward_pre_hook(enter(i), with_kwargs=True) for i, layer in enumerate(layers)]
        handles += [layer.register_forward_hook(leave, with_kwargs=True) for layer in layers]
        device = next(iter(fakes.values()), fake_input[0]).device
        try:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), recorder, autocast(device, dtype):
                functional_call(model, fakes, fake_input)
        finally:
            for handle in handles:
                handle.remove()
        weight_keys = {storage_key(t) for t in fakes.values()}
        floor_keys = (entering | saved_in[None]) - weight_keys
        for block, ops in enumerate(recorder.ops):
            for op in ops:
                op.saved = not saved_in[block].isdisjoint(op.made)
        return RecordedBlocks(
            recorder.ops,
            [max((i for i, op in enumerate(ops) if op.saved), default=-1) for ops in recorder.ops],
            sum(known[k] for k in saved - weight_keys),
            sum(known[k] for k in floor_keys),
            frozenset(floor_keys),
        )


@contextlib.contextmanager
def fake_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], example_input: tuple[torch.Tensor, ...]
) -> Iterator[tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]]:
    """`weights` and `example_input` as fake tensors, within a FakeTensorMode (the caller's, for a fake model)."""
    if any(is_fake(t) for t in weights.values()):
        with unpacked_positions():
            yield weights, example_input
        return
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes = {name: mode.from_tensor(t, static_shapes=True) for name, t in weights.items()}
    inputs = tuple(mode.from_tensor(t, static_shapes=True) for t in example_input)
    with mode, unpacked_positions():
        yield fakes, inputs


@contextlib.contextmanager
def unpacked_positions() -> Iterator[None]:
    """While active, transformers finds no packed sequences in fake position ids (the real check's answer for
    positions 0..seq-1 in every row, the ones a model makes for input ids alone)."""
    try:
        from transformers import masking_utils
    except ImportError:  # not a transformers model: nothing to answer
        yield
        return
    found = masking_utils.find_packed_sequence_indices

    def unpacked(position_ids: torch.Tensor) -> torch.Tensor | None:
        return None if is_fake(position_ids) else found(position_ids)

    masking_utils.find_packed_sequence_indices = unpacked
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = found
