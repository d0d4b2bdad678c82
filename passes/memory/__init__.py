"""`memory`: which activations backward needs, and whether to store, recompute or invert each.

What backward needs is asked of autograd itself, call by call: each primitive is
run once on meta tensors laid out as in the program, under saved-tensor hooks
(`operator_probe`, `saved_tensors`), and the program is replayed on storages
(`storages`). Each saved unit is then decided (`decisions`, with `couplings` for
the reversible plan) and totalled per training mode (`modes`) into a
`MemoryResult` (`result`).

Predicting eager autograd: lower with `level="training"` where the lowering can.
It keeps the composite operators eager runs (`linear`, `matmul`, `layer_norm`,
`softmax`, `dropout`), and a probe decomposes each exactly as eager does: the
prediction equals the measured bytes on the tiny gpt2 and bert. The core IR is
faithful too except that it turns eval-mode dropout into `clone`, a real copy
the next matmul saves where eager saves the softmax output itself; it
over-predicts by one attention-probability tensor per layer (+3% to +10% on the
tiny models at sequence 16 to 32). Pythia's rotary embedding does not lower at
the training level, so pythia is predicted from the core IR.
"""

from __future__ import annotations

from bwsk.passes.analysis import Analysis, Pass
from bwsk.passes.memory.couplings import definition_values
from bwsk.passes.memory.modes import plan
from bwsk.passes.memory.operator_probe import Layout, Probed, fill_operands, probe_call
from bwsk.passes.memory.result import DROPPED, MODES, Decision, LayerTotal, MemoryResult, ModeTotal, mode_total
from bwsk.passes.memory.storages import Replay, Storage, replay

__all__ = [
    "DROPPED",
    "MODES",
    "Decision",
    "LayerTotal",
    "Layout",
    "Memory",
    "MemoryResult",
    "ModeTotal",
    "Probed",
    "Replay",
    "Storage",
    "definition_values",
    "fill_operands",
    "mode_total",
    "plan",
    "probe_call",
    "replay",
]


class Memory(Pass[MemoryResult]):
    name = "memory"
    requires = ("classify", "partition")
    summary = "activation bytes backward needs: store, recompute or invert each; totals per training mode"

    def run(self, analysis: Analysis) -> MemoryResult:
        return plan(analysis)
