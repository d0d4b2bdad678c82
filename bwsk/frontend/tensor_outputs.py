"""A model as torch.export sees it: positional tensors in, one tensor out; and its export.

`TensorOutputs` wraps a transformers model (no KV cache, the first output), `traceable` picks it
when needed, `export` runs `torch.export.export` on the result (optionally with a dynamic batch).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class TensorOutputs(nn.Module):
    """Calls a transformers model on plain tensors without a KV cache and returns its first output.

    The first output is `logits` for models with a head and `last_hidden_state` for bare ones.
    Parameter names gain the prefix `model.`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        accepts_cache = "use_cache" in inspect.signature(model.forward).parameters
        self.extra: dict[str, Any] = {"use_cache": False} if accepts_cache else {}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs, **self.extra)[0]


def traceable(model: nn.Module) -> nn.Module:
    """`model` itself, or a `TensorOutputs` wrapper when it is a transformers model.

    Invariant: `export(model, args).module()(*args)` computes `traceable(model)(*args)`.
    """
    from transformers import PreTrainedModel

    return TensorOutputs(model) if isinstance(model, PreTrainedModel) else model


def export(
    model: nn.Module, args: Sequence[torch.Tensor], *, dynamic_batch: bool = False, strict: bool = False
) -> torch.export.ExportedProgram:
    """`torch.export.export` of `traceable(model)` on positional tensor `args`.

    With `dynamic_batch`, dim 0 of every input (that has one) is one shared dynamic `batch`
    dimension. A batch of 1 would be specialised by tracing, so it is traced at batch 2 and the
    program's stored example inputs are then reset to `args`.
    """
    args = tuple(args)
    module = traceable(model)
    if not dynamic_batch:
        return torch.export.export(module, args, strict=strict)
    batch = torch.export.Dim("batch")
    traced = tuple(a.expand(2, *a.shape[1:]).contiguous() if a.dim() and a.shape[0] == 1 else a for a in args)
    shapes = torch.export.ShapesCollection()
    for tensor in traced:
        if tensor.dim():
            shapes[tensor] = {0: batch}
    program = torch.export.export(module, traced, dynamic_shapes=shapes.dynamic_shapes(module, traced), strict=strict)
    program.example_inputs = (args, {})
    return program
