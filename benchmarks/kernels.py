"""Fused seam kernels against eager torch and torch.compile of the same function.

    python benchmarks/kernels.py [--dtype bf16|fp16|fp32] [--stream-dtype fp32] [--json FILE] [--plot FILE]

For each seam (forward y = x + f; n = norm(y), rebuild x = y - f; n = norm(x), the
backward of the forward seam, and the norm backward the reversible runtime runs: dy +
norm'(y)^T dn with the weight and bias gradients, no branch gradient) with LayerNorm and RMSNorm, at Pythia-410M (d = 1024) and
Pythia-1B (d = 2048) widths and 1k to 16k rows: time per call (triton.testing.do_bench,
median) and achieved bandwidth (bytes every implementation must move at least, over time)
against the device's copy bandwidth measured in the same run. Ratios compare
implementations measured side by side. Without CUDA, it checks the kernels against the
torch reference under TRITON_INTERPRET=1 at these widths and says that timings need a GPU.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys

import torch

from bwsk.atomic import write_atomic

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
WIDTHS = {"pythia-410m": 1024, "pythia-1b": 2048}
ROWS = (1024, 2048, 4096, 8192, 16384)
NORMS = ("layernorm", "rmsnorm")
SEAMS = ("forward", "rebuild", "backward", "norm-backward")


def pattern_for(norm: str):
    from bwsk.kernels.patterns import SeamPattern

    return SeamPattern("add", norm, True, norm == "layernorm", 1e-5)


def operands(pattern, rows: int, width: int, stream: torch.dtype, branch: torch.dtype, device: str) -> dict:
    generator = torch.Generator(device=device).manual_seed(0)

    def random(*shape, dtype):
        return torch.randn(*shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    return {
        "x": random(rows, width, dtype=stream),
        "f": random(rows, width, dtype=branch),
        "weight": 1 + 0.1 * random(width, dtype=branch),
        "bias": 0.1 * random(width, dtype=branch) if pattern.bias else None,
        "dy": random(rows, width, dtype=stream),
        "dn": random(rows, width, dtype=stream),
    }


def seam_functions(pattern, direction: str) -> dict:
    """name -> (x, f, weight, bias) -> (out, normed), for the fused kernel, eager torch and torch.compile of eager torch."""
    from bwsk.kernels import reference, runtime

    torch_seam = reference.seam_rebuild if direction == "rebuild" else reference.seam_forward
    eager = functools.partial(torch_seam, pattern)
    fused = functools.partial(runtime.SeamFunction.apply, runtime.kernels_for(pattern), direction)
    return {"triton": fused, "eager": eager, "compile": torch.compile(eager, dynamic=False)}


def norm_backward_calls(pattern, o: dict, *, compiled: bool = True) -> dict:
    """name -> no-argument call of the runtime's norm backward: the fused kernel, eager autograd, autograd of torch.compile.

    The graph of the eager and compiled normalisation is built here (outside the timing); `compiled=False` leaves torch.compile out.
    """
    from bwsk.kernels import reference, runtime

    kernels = runtime.kernels_for(pattern)
    fused = functools.partial(
        runtime.launch_backward, kernels, o["x"], o["dy"], o["dn"], o["weight"], o["bias"], o["x"].dtype, o["x"].dtype, 0
    )

    def through(normalise):
        leaves = [t.detach().requires_grad_() for t in (o["x"], o["weight"], o["bias"]) if t is not None]
        value, weight, bias = leaves[0], leaves[1], leaves[2] if len(leaves) > 2 else None
        normed = normalise(value, weight, bias)

        def call():
            grads = torch.autograd.grad(normed, leaves, o["dn"], retain_graph=True)
            return o["dy"] + grads[0], *grads[1:]

        return call

    eager = functools.partial(reference.reference_norm, pattern)
    calls = {"triton": fused, "eager": through(eager)}
    if compiled:
        calls["compile"] = through(torch.compile(eager, dynamic=False))
    return calls


def timed_call(function, seam: str, o: dict):
    """A no-argument call running `seam` once: the function itself, or (backward) the gradients of its outputs."""
    if seam != "backward":
        return functools.partial(function, o["x"], o["f"], o["weight"], o["bias"])
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (o["x"], o["f"], o["weight"], o["bias"])]
    outputs = function(*leaves)
    present = [t for t in leaves if t is not None]
    return functools.partial(torch.autograd.grad, outputs, present, (o["dy"], o["dn"]), retain_graph=True)


def bytes_moved(seam: str, o: dict) -> int:
    """The least traffic a fused seam needs: read x and f, write y and n; backward reads y, dy, dn and writes dx and df."""
    size = o["x"].numel()
    stream, branch = o["x"].element_size(), o["f"].element_size()
    if seam == "norm-backward":
        return size * 4 * stream
    if seam == "backward":
        return size * (4 * stream + (branch if o["f"].dtype != o["x"].dtype else 0))
    return size * (3 * stream + branch)


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a device-to-device copy of 1 GiB (read + write)."""
    from triton.testing import do_bench

    source = torch.empty(2**30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    milliseconds = do_bench(lambda: target.copy_(source), return_mode="median")
    return 2 * source.numel() / (milliseconds * 1e-3)


def measure(args) -> list[dict]:
    from triton.testing import do_bench

    stream, branch = DTYPES[args.stream_dtype or args.dtype], DTYPES[args.dtype]
    peak = copy_bandwidth("cuda")
    print(f"device: {torch.cuda.get_device_name()}; copy bandwidth {peak / 1e9:,.0f} GB/s; stream {stream}, branch {branch}")
    rows_out = []
    for norm in NORMS:
        pattern = pattern_for(norm)
        for seam in SEAMS:
            functions = seam_functions(pattern, "rebuild" if seam == "rebuild" else "forward")
            for model, width in WIDTHS.items():
                for rows in ROWS:
                    o = operands(pattern, rows, width, stream, branch, "cuda")
                    row = {"norm": norm, "seam": seam, "model": model, "width": width, "rows": rows, "bytes": bytes_moved(seam, o)}
                    calls = norm_backward_calls(pattern, o) if seam == "norm-backward" else None
                    for name, function in functions.items():
                        call = calls[name] if calls is not None else timed_call(function, seam, o)
                        milliseconds = do_bench(call, return_mode="median")
                        row[f"{name}_ms"] = milliseconds
                        row[f"{name}_of_copy"] = row["bytes"] / (milliseconds * 1e-3) / peak
                    row["speedup_vs_eager"] = row["eager_ms"] / row["triton_ms"]
                    row["speedup_vs_compile"] = row["compile_ms"] / row["triton_ms"]
                    rows_out.append(row)
                    print(
                        f"{norm:9} {seam:8} d={width:5} rows={rows:6}: triton {row['triton_ms'] * 1e3:8.1f} us ({row['triton_of_copy']:5.0%} of copy), "
                        f"eager x{row['speedup_vs_eager']:.2f}, compile x{row['speedup_vs_compile']:.2f}"
                    )
    return rows_out


def plot(results: list[dict], path: str, force: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(NORMS), len(SEAMS), figsize=(5 * len(SEAMS), 4 * len(NORMS)), sharey=True, squeeze=False)
    for i, norm in enumerate(NORMS):
        for j, seam in enumerate(SEAMS):
            axis = axes[i][j]
            for width in WIDTHS.values():
                points = [r for r in results if r["norm"] == norm and r["seam"] == seam and r["width"] == width]
                for name, style in (("triton", "-o"), ("compile", "--s"), ("eager", ":^")):
                    axis.plot([r["rows"] for r in points], [r[f"{name}_of_copy"] for r in points], style, label=f"{name} d={width}")
            axis.set_xscale("log", base=2)
            axis.axhline(1.0, color="grey", linewidth=0.8)
            axis.set_title(f"{norm} {seam}")
            axis.set_xlabel("rows")
            axis.set_ylabel("fraction of copy bandwidth")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    write_atomic(path, image.getvalue(), force=force)
    print(f"plot written to {path}")


def check_on_cpu() -> None:
    """Without a GPU: the kernels against the reference under the interpreter, at the benchmark widths."""
    from bwsk.kernels import reference, runtime

    print("no CUDA device: checking correctness under TRITON_INTERPRET=1 (timings need a GPU)")
    for norm in NORMS:
        pattern = pattern_for(norm)
        for model, width in WIDTHS.items():
            o = operands(pattern, 8, width, torch.float32, torch.float32, "cpu")
            leaves = [t.requires_grad_() if t is not None else None for t in (o["x"], o["f"], o["weight"], o["bias"])]
            present = [t for t in leaves if t is not None]
            for direction in ("forward", "rebuild"):
                fused = runtime.SeamFunction.apply(runtime.kernels_for(pattern), direction, *leaves)
                expected = (reference.seam_forward if direction == "forward" else reference.seam_rebuild)(pattern, *leaves)
                grads = torch.autograd.grad(fused, present, (o["dy"], o["dn"]))
                expected_grads = torch.autograd.grad(expected, present, (o["dy"], o["dn"]))
                error = max((a - b).abs().max().item() for a, b in zip((*fused, *grads), (*expected, *expected_grads)))
                print(f"{norm:9} {direction:7} d={width} ({model}): max abs error vs torch, outputs and gradients: {error:.2e}")
            calls = norm_backward_calls(pattern, {name: t.detach() if t is not None else None for name, t in o.items()}, compiled=False)
            fused = [t for t in calls["triton"]() if t is not None]
            error = max((a - b).abs().max().item() for a, b in zip(fused, calls["eager"](), strict=True))
            print(f"{norm:9} norm-backward d={width} ({model}): max abs error vs torch autograd: {error:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=DTYPES, default="bf16", help="dtype of the branch output, weights and (by default) streams")
    parser.add_argument("--stream-dtype", choices=DTYPES, help="dtype of the streams x, y (default: --dtype)")
    parser.add_argument("--json", help="write the measurements to this file")
    parser.add_argument("--plot", help="write the bandwidth plot (PNG) to this file")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the generated kernels are imported, on first use
        check_on_cpu()
        return 0
    for path in (args.json, args.plot):
        if path and os.path.exists(path) and not args.force:
            parser.error(f"{path}: already exists (pass --force to replace it)")
    results = measure(args)
    if args.json:
        document = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "stream": args.stream_dtype or args.dtype,
            "branch": args.dtype,
            "results": results,
        }
        write_atomic(args.json, json.dumps(document, indent=1) + "\n", force=args.force)
    if args.plot:
        plot(results, args.plot, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
