"""One training step per mode as a table: the records `compare_modes` measures (read by attribute, in the order given)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from bwsk.render.units import MIB


def step_table(records: Sequence[Any], *, compact: bool = False) -> Table:
    """`bwsk.training.modes.compare.Record`s as a rich table: memory in MiB, prediction against measurement, time and gradients against conventional.

    `compact` keeps the columns that fit an 80-column terminal (mode, memory, time, gradients) and names
    the model and shape in the title.
    """
    first = records[0]
    title = (
        f"one training step per mode: {first.model}, {first.layers} layers, batch {first.batch} x {first.seq}"
        if compact
        else "one training step per mode"
    )
    out = Table(title=title, show_lines=False)
    columns = {
        "model": lambda r: r.model,
        "layers": lambda r: str(r.layers),
        "batch x seq": lambda r: f"{r.batch} x {r.seq}",
        "mode": lambda r: r.label,
        "peak MiB": lambda r: f"{r.peak_bytes / MIB:.2f}",
        "activations MiB": lambda r: f"{r.activation_bytes / MIB:.3f}",
        "predicted MiB": lambda r: "n/a" if r.predicted_activation_bytes is None else f"{r.predicted_activation_bytes / MIB:.3f}",
        "pred/meas": lambda r: (
            "n/a"
            if r.predicted_activation_bytes is None or not r.activation_bytes
            else f"{r.predicted_activation_bytes / r.activation_bytes:.3f}"
        ),
        "time x conv": lambda r: f"{r.step_time_ratio:.2f}" if r.step_time_ratio is not None else "n/a",
        "max grad diff": lambda r: f"{r.max_grad_difference:.1e}" if r.max_grad_difference is not None else "n/a",
    }
    if compact:
        columns = {name: columns[name] for name in ("mode", "activations MiB", "peak MiB", "time x conv", "max grad diff")}
    for column in columns:
        out.add_column(column, justify="left" if column in ("model", "mode") else "right", no_wrap=column == "mode")
    for record in records:
        out.add_row(*(cell(record) for cell in columns.values()))
    return out
