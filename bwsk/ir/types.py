"""IR types: tensors (dtype and shape, symbolic dimensions allowed), scalars, tuples, functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bwsk.ir.dims import Dim, dim_from_sympy

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
    torch.float64: "f64",
    torch.int8: "i8",
    torch.int16: "i16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.uint8: "u8",
    torch.bool: "bool",
    torch.complex64: "c64",
    torch.complex128: "c128",
    torch.float8_e4m3fn: "f8e4m3fn",
    torch.float8_e5m2: "f8e5m2",
}
DTYPES_BY_NAME: dict[str, torch.dtype] = {name: dtype for dtype, name in DTYPE_NAMES.items()}

SCALAR_KINDS = ("int", "float", "bool")


def dim_from_torch(size: object) -> Dim:
    """A torch size (int or SymInt) as an IR dimension (see `bwsk.ir.dims`)."""
    if isinstance(size, int):
        return size
    return dim_from_sympy(size.node.expr)


@dataclass(frozen=True)
class TensorType:
    """A tensor of `dtype` with `shape`: sizes, symbols (str) and expressions (`bwsk.ir.dims`)."""

    dtype: torch.dtype
    shape: tuple[Dim, ...]

    def __str__(self) -> str:
        return f"{DTYPE_NAMES[self.dtype]}[{', '.join(str(d) for d in self.shape)}]"

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass(frozen=True)
class ScalarType:
    """A Python scalar (often symbolic, e.g. a SymInt from `aten.sym_size.int`)."""

    kind: str

    def __str__(self) -> str:
        return self.kind


@dataclass(frozen=True)
class TupleType:
    """The result of a multi-output operator, taken apart with `operator.getitem`."""

    items: tuple[Type, ...]

    def __str__(self) -> str:
        if len(self.items) == 1:
            return f"({self.items[0]},)"
        return f"({', '.join(str(t) for t in self.items)})"


@dataclass(frozen=True)
class FunctionType:
    """A function of first-order arguments; `arity` is the number of parameters."""

    params: tuple[Type, ...]
    result: Type

    def __str__(self) -> str:
        return f"fn({', '.join(str(t) for t in self.params)}) -> {self.result}"

    @property
    def arity(self) -> int:
        return len(self.params)


Type = TensorType | ScalarType | TupleType | FunctionType


def type_of_value(value: object) -> Type:
    """The IR type of a runtime value (tensor, Python scalar, tuple of those)."""
    if isinstance(value, torch.Tensor):
        return TensorType(value.dtype, tuple(dim_from_torch(s) for s in value.shape))
    if isinstance(value, bool):
        return ScalarType("bool")
    if isinstance(value, int):
        return ScalarType("int")
    if isinstance(value, float):
        return ScalarType("float")
    if isinstance(value, (tuple, list)):
        return TupleType(tuple(type_of_value(v) for v in value))
    if value is None:  # what an operator returning `()` gives
        return TupleType(())
    raise TypeError(f"no IR type for {type(value).__name__}")


def example_tensor(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """A random value of a tensor type: floats from N(0, 1); integers from {0, 1}, valid ids for any embedding."""
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, 2, shape, generator=generator, dtype=dtype)
