"""Plots as PNG bytes without pyplot: a bare matplotlib `Figure` (constrained layout) drawn on the Agg canvas, so no
global backend is set and no figure outlives its function; saved with no software tag, so the same data gives the same
bytes. Matplotlib is imported on first use (the CLIs' `--help` never loads it)."""

from __future__ import annotations

import io
from typing import Any


def new_figure(rows: int, columns: int, size: tuple[float, float], **subplots: Any) -> tuple[Any, Any]:
    """A fresh figure of `size` inches and its rows x columns grid of axes (always 2-D: `squeeze=False`)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False, **subplots)


def png_bytes(figure: Any, dpi: int = 100) -> bytes:
    """`figure` rendered as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
