"""The formatters of byte counts (binary units, at most three significant digits below 100) and FLOP counts (decimal)."""

from __future__ import annotations

MIB = 2**20  # bytes in a mebibyte: every table and plot reports MiB


def human_bytes(nbytes: float) -> str:
    """512 B, 1 KiB, 1.5 KiB, 513 KiB, 2 MiB, 1.23 GiB (exact bytes below 1 KiB; negative sizes keep their sign)."""
    if nbytes < 0:
        return "-" + human_bytes(-nbytes)
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    size = float(nbytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.0f} {unit}" if size >= 100 else f"{size:.3g} {unit}"


def human_flops(flops: float) -> str:
    """0, 950 MFLOP, 1.23 GFLOP, 45.6 TFLOP: decimal units, three significant digits."""
    if flops == 0:
        return "0"
    size, unit = float(flops), "FLOP"
    for prefix in ("k", "M", "G", "T", "P"):
        if abs(size) < 1000:
            break
        size, unit = size / 1000, prefix + "FLOP"
    return f"{size:.3g} {unit}"
