"""The experiment's two figures as PNG bytes: training loss curves, and peak memory per variant.

Drawn on a bare matplotlib `Figure` with the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import io
from typing import Any

MIB = 1024**2
LINE_STYLES = ("-", "--", ":", "-.")


def loss_curves_png(curves: dict[str, dict[str, list[dict[str, Any]]]]) -> bytes:
    """Training loss against step, one panel per experiment: per variant the mean over seeds (line) and their range (band).

    `curves[experiment][variant]` lists runs as {"seed", "steps", "losses", "valid_steps", "valid_losses"}; steps
    every seed reached are drawn. Line styles differ so that variants computing the same function stay visible.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5 * len(curves), 4.2), layout="constrained")
    axes = figure.subplots(1, len(curves), squeeze=False)[0]
    for axis, (experiment, variants) in zip(axes, curves.items()):
        for index, (variant, runs) in enumerate(variants.items()):
            colour, style = f"C{index % 10}", LINE_STYLES[index % len(LINE_STYLES)]
            steps, mean, low, high = _across_seeds([(run["steps"], run["losses"]) for run in runs])
            axis.plot(steps, mean, color=colour, linestyle=style, linewidth=1.4, label=f"{variant} ({len(runs)} seeds)")
            if len(runs) > 1:
                axis.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
            valid_steps, valid_mean, _, _ = _across_seeds([(run["valid_steps"], run["valid_losses"]) for run in runs])
            axis.plot(valid_steps, valid_mean, "o", color=colour, markersize=5, markerfacecolor="none")
        axis.set_title(f"{experiment}: training loss (mean over seeds, band: range), validation loss (circles)", fontsize="medium")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss (nats per token)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return _png(figure)


def _across_seeds(series: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps every series has, mean, min, max at each of them)."""
    shared = sorted(set.intersection(*(set(steps) for steps, _ in series)))
    values = [[dict(zip(steps, losses))[step] for steps, losses in series] for step in shared]
    return shared, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


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
