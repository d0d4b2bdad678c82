"""The four training modes and what each keeps from forward to backward.

`apply` (`apply_mode`, the predicted bytes per mode), `selective` (the analyzed mode's
checkpoint policy), `measure` (one step's memory and time, measured with MemTracker),
`compare` (the modes side by side).

This file holds only names (importing it imports no pass): the modes, in measuring order
(the keys of the memory pass's prediction are the same tuple, `bwsk.passes.memory.result.MODES`),
and the analyzed mode's default budget. `apply_mode` here is the old path of
`bwsk.training.modes.apply.apply_mode`, kept for one release (imported on first use).
"""

from bwsk.lazy import on_first_use

MODES = ("conventional", "checkpoint", "analyzed", "reversible")
DEFAULT_BUDGET = 0.5  # the analyzed mode's share of the recomputable bytes it keeps

__getattr__, __dir__ = on_first_use(__name__, {"apply_mode": "bwsk.training.modes.apply", "is_reversible": "bwsk.training.modes.apply"})
