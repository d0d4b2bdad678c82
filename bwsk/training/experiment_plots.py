"""The experiment's two figures as PNG bytes: training loss curves, and peak memory per variant.

Drawn on a bare matplotlib `Figure` with the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import io
from typing import Any

MIB = 1024**2


def loss_curves_png(curves: dict[str, dict[str, list[dict[str, Any]]]]) -> bytes:
    """Training loss against step, one panel per experiment, one colour per variant, one line per seed.

    `curves[experiment][variant]` lists runs as {"seed", "steps", "losses", "valid_steps", "valid_losses"}.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5 * len(curves), 4.2), layout="constrained")
    axes = figure.subplots(1, len(curves), squeeze=False)[0]
    for axis, (experiment, variants) in zip(axes, curves.items()):
        for colour, (variant, runs) in enumerate(variants.items()):
            for index, run in enumerate(runs):
                label = variant if index == 0 else None
                axis.plot(run["steps"], run["losses"], color=f"C{colour}", alpha=0.8 if index == 0 else 0.4, linewidth=1, label=label)
                axis.plot(run["valid_steps"], run["valid_losses"], "o", color=f"C{colour}", markersize=4, alpha=0.9)
        axis.set_title(f"{experiment}: training loss (lines), validation loss (dots)")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss (nats per token)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return _png(figure)


def peak_memory_png(memory: dict[str, float]) -> bytes:
    """Horizontal bars: mean peak memory of each variant's training step, in MiB."""
    from matplotlib.figure import Figure

    names = list(memory)
    figure = Figure(figsize=(7, 0.5 * len(names) + 1.4), layout="constrained")
    axis = figure.subplots()
    values = [memory[name] / MIB for name in names]
    bars = axis.barh(names, values, color=[f"C{i % 10}" for i in range(len(names))])
    axis.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=3, fontsize="small")
    axis.invert_yaxis()
    axis.set_xlabel("peak memory of a training step (MiB)")
    axis.set_xlim(0, max(values, default=1) * 1.2 or 1)
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()
