"""How far the injectivity rules cover Core ATen, measured on torch's own OpInfo sample inputs.

`core_targets` lists every ATen overload tagged `core`. `sample_calls` runs the sample inputs of
the OpInfos in OPINFOS (torch.testing's op_db; needs the `expecttest` package) under a dispatch
recorder and keeps each distinct Core ATen call, operands as TensorInfo. `judge_samples` applies
the rule to every tensor operand of those calls and checks each S/K verdict with the oracle.
Invariants: every recorded call is one that torch itself executed; a verdict counts as confirmed
only if the oracle confirms it (an S by full Jacobian rank and no collision, a K by a witness).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bwsk.passes.classify.oracle import check
from bwsk.passes.classify.rules import TensorInfo, Verdict, classify

SAMPLES_PER_DTYPE = 2
DTYPES = (torch.float32, torch.int64, torch.bool)
MAX_SAMPLE_ELEMENTS = 512  # larger samples are skipped: the oracle's Jacobian stays small

# OpInfos whose samples reach every Core ATen operator they can (found by scanning op_db once).
OPINFOS = (
    "__getitem__",
    "__rdiv__",
    "__ror__",
    "__rpow__",
    "_native_batch_norm_legit",
    "acos",
    "acosh",
    "amin",
    "any",
    "arange",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "bitwise_and",
    "bitwise_not",
    "bitwise_xor",
    "cdist",
    "ceil",
    "clamp",
    "cos",
    "cosh",
    "cumsum",
    "diagonal",
    "div",
    "empty_strided",
    "expm1",
    "fft.irfftn",
    "fill",
    "flip",
    "floor",
    "fmod",
    "full_like",
    "ge",
    "index_put",
    "index_select",
    "inner",
    "isclose",
    "isinf",
    "linalg.matrix_rank",
    "log10",
    "log1p",
    "log2",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "lt",
    "masked.argmax",
    "masked.argmin",
    "masked.std",
    "masked_scatter",
    "max",
    "max_pool2d_with_indices_backward",
    "min",
    "nanmean",
    "nanquantile",
    "native_layer_norm",
    "nn.functional.adaptive_avg_pool2d",
    "nn.functional.adaptive_avg_pool3d",
    "nn.functional.avg_pool2d",
    "nn.functional.avg_pool3d",
    "nn.functional.conv_transpose1d",
    "nn.functional.cosine_embedding_loss",
    "nn.functional.cross_entropy",
    "nn.functional.embedding",
    "nn.functional.fractional_max_pool3d",
    "nn.functional.gaussian_nll_loss",
    "nn.functional.gelu",
    "nn.functional.grid_sample",
    "nn.functional.group_norm",
    "nn.functional.instance_norm",
    "nn.functional.leaky_relu",
    "nn.functional.max_pool3d",
    "nn.functional.multi_head_attention_forward",
    "nn.functional.pad",
    "nn.functional.pdist",
    "nn.functional.poisson_nll_loss",
    "nn.functional.relu",
    "nn.functional.relu6",
    "nn.functional.selu",
    "nonzero",
    "prod",
    "remainder",
    "round",
    "rsqrt",
    "scatter",
    "scatter_add",
    "scatter_reduce",
    "select",
    "select_scatter",
    "sigmoid",
    "sign",
    "sin",
    "sinh",
    "special.ndtr",
    "split",
    "squeeze",
    "stft",
    "svd_lowrank",
    "take_along_dim",
    "tan",
    "tanh",
    "topk",
    "trunc",
    "var",
)


def core_targets() -> list[str]:
    """Every `aten.<name>.<overload>` carrying torch's `core` tag (all registered schemas, not only those loaded)."""
    names = {str(schema.name).removeprefix("aten::") for schema in torch._C._jit_get_all_schemas() if str(schema.name).startswith("aten::")}
    found = set()
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for overload in packet.overloads():
            if torch.Tag.core in getattr(packet, overload).tags:
                found.add(f"aten.{name}.{overload}")
    return sorted(found)


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return value


class _Recorder(TorchDispatchMode):
    """Records the Core ATen calls torch dispatches, operands described by type."""

    def __init__(self, targets: set[str]) -> None:
        super().__init__()
        self.targets = targets
        self.calls: list[tuple[str, tuple, dict]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        target = f"aten.{func._overloadpacket.__name__}.{func._overloadname}"
        if target in self.targets:
            self.calls.append((target, tuple(_describe(a) for a in args), {k: _describe(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _small(args: tuple, kwargs: dict) -> bool:
    def sizes(v: Any) -> Iterator[int]:
        if isinstance(v, TensorInfo):
            yield v.numel
        elif isinstance(v, (list, tuple)):
            for u in v:
                yield from sizes(u)

    return all(n <= MAX_SAMPLE_ELEMENTS for n in sizes((args, list(kwargs.values()))))


def sample_calls(opinfos: tuple[str, ...] | None = None) -> dict[str, list[tuple[tuple, dict]]]:
    """Distinct Core ATen calls (target -> [(args, kwargs)]) made by the OpInfo samples, CPU, a few per dtype."""
    from torch.testing._internal.common_methods_invocations import op_db

    torch.manual_seed(0)  # sample shapes are fixed; this pins any drawn argument too
    wanted = set(OPINFOS if opinfos is None else opinfos)
    targets = set(core_targets())
    found: dict[str, dict[str, tuple[tuple, dict]]] = {}
    for info in op_db:
        if info.name not in wanted:
            continue
        for dtype in DTYPES:
            if not info.supports_dtype(dtype, "cpu"):
                continue
            recorder = _Recorder(targets)
            try:
                samples = list(info.sample_inputs("cpu", dtype, requires_grad=False))[:SAMPLES_PER_DTYPE]
                with recorder:
                    for sample in samples:
                        info.op(sample.input, *sample.args, **sample.kwargs)
            except Exception:  # noqa: BLE001, S112 - a sample torch itself rejects is not a call
                pass
            for target, args, kwargs in recorder.calls:
                if _small(args, kwargs):
                    found.setdefault(target, {}).setdefault(repr((args, kwargs)), (args, kwargs))
    return {target: list(calls.values()) for target, calls in sorted(found.items())}


@dataclass(frozen=True)
class Sample:
    """One rule application on an OpInfo call, and the oracle's answer (None for unknown verdicts)."""

    target: str
    operand: str
    verdict: Verdict
    confirmed: bool | None
    evidence: str


def _operands(args: tuple) -> Iterator[tuple[int, int | None]]:
    for i, a in enumerate(args):
        if isinstance(a, TensorInfo):
            yield i, None
        elif isinstance(a, list):
            yield from ((i, j) for j, u in enumerate(a) if isinstance(u, TensorInfo))


def judge_samples(calls: dict[str, list[tuple[tuple, dict]]]) -> list[Sample]:
    """Every tensor operand of every call judged by its rule; S and K verdicts checked by the oracle."""
    found = []
    for target, applications in calls.items():
        for args, kwargs in applications:
            for varying, item in _operands(args):
                verdict = classify(target, args, kwargs, varying, varying_item=item)
                name = f"{varying}" if item is None else f"{varying}[{item}]"
                if verdict.kind == "unknown":
                    found.append(Sample(target, name, verdict, None, "no verdict"))
                    continue
                result = check(target, args, kwargs, varying, verdict, varying_item=item)
                found.append(Sample(target, name, verdict, result.ok if result.decided else None, result.evidence))
    return found
