"""The four training modes and what each keeps from forward to backward.

`apply` (`apply_mode`, the predicted bytes per mode), `recording` (one forward recorded per block: the analyzed
plan's facts), `selective` (the analyzed mode's plan and checkpoint policy), `torch_sac` (torch's SAC ILP for the same
blocks, the baseline), `flops` (FLOP counting), `measure` (one step's memory and time, measured with MemTracker),
`fake_step` (a full-size step without weights), `peak_tracker` (MemTracker counting the global peak only), `frontier` (bytes against recompute FLOPs per planner), `compare`
(the modes side by side).

Importing this package imports no pass: it re-exports the modes' names and the analyzed mode's default
budget from `bwsk.training.choices`. `apply_mode` here is the old path of
`bwsk.training.modes.apply.apply_mode`, kept for one release (imported on first use).
"""

from bwsk.lazy import on_first_use
from bwsk.training.choices import DEFAULT_BUDGET, MODES

__getattr__, __dir__ = on_first_use(__name__, {"apply_mode": "bwsk.training.modes.apply", "is_reversible": "bwsk.training.modes.apply"})

__all__ = ["DEFAULT_BUDGET", "MODES"]
