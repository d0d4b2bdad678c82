"""`PeakTracker`: MemTracker counting the whole program's peak only.

MemTracker also keeps every module's own peak, updated on every operator for every module on the stack: most of the
time of a tracked step (6.8 of 8.4 s of a 48-block forward). Every bwsk measurement reads the global snapshots only
(`get_tracker_snapshot("current" | "peak")`), which this subclass keeps as MemTracker does: the same bytes per category
(`tests/training/modes/test_fake_step.py` compares both). `categories` reads one of them by category name.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker


class PeakTracker(MemTracker):
    """MemTracker keeping the global peak (snapshot and categories) only, not every module's own peak."""

    def _update_peak_stats(self, peak_state: Any) -> None:
        for device, snapshot in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < snapshot[_TOTAL_KEY]:
                self._peak_mem[device] = snapshot[_TOTAL_KEY]
                self._peak_mem_snap[device] = dict(snapshot)

    def categories(self, kind: str, device_type: str | None = None) -> dict[str, int]:
        """Bytes per category name ("Activation", "Parameter", ..., "Total") in the `kind` snapshot ("current" or
        "peak"), summed over the devices of `device_type` (every device: None)."""
        found: dict[str, int] = {}
        for device, categories in self.get_tracker_snapshot(kind).items():
            if device_type is None or torch.device(device).type == device_type:
                for key, size in categories.items():
                    name = str(getattr(key, "value", key))
                    found[name] = found.get(name, 0) + int(size)
        return found
