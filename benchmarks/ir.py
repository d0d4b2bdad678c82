"""Print and parse throughput of the IR text form at 1k, 10k and 100k definitions.

    python benchmarks/ir.py [--sizes 1000 10000 100000] [--repeats 3]

Programs are synthetic transformer-like stacks: every definition is a primitive
with inline weights, every fourth one a residual block written with S and B.
Parsing includes verification. Reports seconds and microseconds per definition,
and the ratio of the largest to the smallest size's time per definition
(linear scaling means a ratio near 1).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from bwsk.ir.parser import parse
from bwsk.ir.printer import print_program
from bwsk.ir.program import Definition, Input, Output, Program, State
from bwsk.ir.terms import HOLE, B, Prim, Ref, S, apply
from bwsk.ir.types import FunctionType, TensorType


def synthetic_program(n_defs: int, width: int = 64) -> Program:
    """A chain of `n_defs` definitions over `n_defs // 4` weight matrices."""
    act = TensorType(torch.float32, ("batch", width))
    inputs = (Input("x", act),)
    state = []
    defs = []
    previous = Ref("value", "x")
    for i in range(n_defs):
        layer = f"layers.{i // 4}"
        weight = Ref("state", f"{layer}.weight")
        bias = Ref("state", f"{layer}.bias")
        kind = i % 4
        if kind == 0:
            state.append(State(weight.name, "param", TensorType(torch.float32, (width, width))))
            state.append(State(bias.name, "param", TensorType(torch.float32, (width,))))
            linear = Prim("aten.addmm.default", (bias, HOLE, Prim("aten.t.default", (weight,))))
            term = apply(S, Prim("aten.add.Tensor", (HOLE, HOLE)), apply(B, Prim("aten.gelu.default", (HOLE,)), linear))
            defs.append(Definition(f"{layer}.block", term, FunctionType((act,), act), layer))
            continue
        if kind == 1:
            term = apply(Ref("value", f"{layer}.block"), previous)
        elif kind == 2:
            term = Prim("aten.mul.Tensor", (previous, Ref("value", "x")))
        else:
            term = Prim("aten.layer_norm.default", (previous, [width], bias, bias, 1e-5))
        name = f"{layer}.v{kind}"
        defs.append(Definition(name, term, act, layer))
        previous = Ref("value", name)
    return Program("synthetic", inputs, tuple(state), tuple(defs), (Output(previous, act),), (("level", "core"),))


def best_of(repeats: int, work, min_seconds: float = 0.2) -> float:
    """Seconds per call: the best of `repeats` samples, each looping until it lasts `min_seconds` (as timeit does, GC off)."""
    loops = 1
    while True:
        elapsed = _sample(work, loops)
        if elapsed >= min_seconds:
            break
        loops *= 2
    return min([elapsed] + [_sample(work, loops) for _ in range(repeats - 1)]) / loops


def _sample(work, loops: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            work()
        return time.perf_counter() - start
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    parse(print_program(synthetic_program(10)))  # load the grammar outside the timings
    rows = []
    print(f"{'defs':>8} {'bytes':>11} {'print s':>9} {'us/def':>7} {'parse s':>9} {'us/def':>7}")
    for n in args.sizes:
        program = synthetic_program(n)
        text = print_program(program)
        assert parse(text) == program
        t_print = best_of(args.repeats, lambda program=program: print_program(program))
        t_parse = best_of(args.repeats, lambda text=text: parse(text))
        rows.append((n, t_print / n, t_parse / n))
        print(f"{n:>8} {len(text):>11,} {t_print:>9.3f} {1e6 * t_print / n:>7.1f} {t_parse:>9.3f} {1e6 * t_parse / n:>7.1f}")
    (n0, p0, q0), (n1, p1, q1) = rows[0], rows[-1]
    print(f"time per definition, {n1} vs {n0} defs: print x{p1 / p0:.2f}, parse x{q1 / q0:.2f} (linear: near 1, limit 1.5)")


if __name__ == "__main__":
    main()
