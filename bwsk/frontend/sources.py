"""Recognise what the user passed (by content, never by extension) and turn it into an ExportedProgram.

A source is one of: a `torch.export.save` archive, a `torch.save` pickle (zip or legacy), a local
Hugging Face directory, a zoo name, or a Hugging Face Hub id (`org/name`). Nothing is unpickled
unless the caller passes `trust_pickle=True`. Every failure is a one-line `SourceError`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from rich.console import Console
from torch import nn

from bwsk.errors import SourceError, first_line
from bwsk.frontend import tensor_outputs, zoo
from bwsk.frontend.archive_check import check_archive, drop_guard_code
from bwsk.frontend.hf_outputs import register_output_types
from bwsk.frontend.hugging_face import load_hf_directory, load_hub
from bwsk.frontend.size_limits import check_tensor_size
from bwsk.ir.types import example_tensor

EXPORT_HINT = 'export it instead: torch.export.save(torch.export.export(model, example_args), "model.pt2")'
PATH_SUFFIXES = {".pt2", ".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".safetensors", ".zip", ".json"}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
DTYPES = {
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "f64": torch.float64,
    "i64": torch.long,
    "i32": torch.int32,
}


class SourceKind(enum.Enum):
    """What a source spec turned out to be."""

    EXPORTED = "torch.export archive"
    PICKLE = "torch.save pickle"
    HF_DIR = "Hugging Face directory"
    ZOO = "zoo model"
    HUB = "Hugging Face Hub model"


@dataclass(frozen=True)
class Resolved:
    """A loaded source.

    Invariant: when `module` and `example_inputs` are both present, `module(*example_inputs)` computes
    what `program.module()(*example_inputs)` computes (`module` is what was exported, see
    `tensor_outputs.traceable`). `module` is None for exported archives.
    """

    program: torch.export.ExportedProgram
    example_inputs: tuple[Any, ...] | None
    module: nn.Module | None
    name: str
    kind: SourceKind


@dataclass(frozen=True)
class InputSpec:
    """The shape and dtype of one example input, written `1x16` or `1x16:i64` (dtype default f32)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @staticmethod
    def parse(spec: str | Sequence[int]) -> InputSpec:
        """Parse `DIMxDIM...[:DTYPE]` (DTYPE one of f32 f16 bf16 f64 i64 i32), or take a shape tuple."""
        if not isinstance(spec, str):
            return InputSpec(tuple(int(d) for d in spec))
        dims, _, dtype = spec.strip().partition(":")
        if dtype and dtype not in DTYPES:
            raise SourceError(f"unknown dtype {dtype!r} in input shape {spec!r}; known: {', '.join(DTYPES)}")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            raise SourceError(f"bad input shape {spec!r}; expected e.g. '1x16' or '1x16:i64'") from None
        if any(d < 0 for d in shape):
            raise SourceError(f"bad input shape {spec!r}: negative dimension")
        return InputSpec(shape, DTYPES[dtype] if dtype else torch.float32)

    def example(self, generator: torch.Generator) -> torch.Tensor:
        """A random tensor of this shape and dtype (see `bwsk.ir.types.example_tensor`); refused beyond this machine's memory."""
        check_tensor_size(self.shape, self.dtype.itemsize, "example input")
        return example_tensor(self.shape, self.dtype, generator)


def classify_file(path: Path) -> SourceKind:
    """EXPORTED or PICKLE, decided from the first bytes and, for zips, member names only.

    A `torch.export.save` zip has a `<root>/archive_format` member (or, from torch <= 2.7, a top-level
    `serialized_exported_program.json`); a `torch.save` zip has `<root>/data.pkl`. A legacy
    `torch.save` file is a raw pickle (protocol 2+ starts with 0x80). Anything else is an error.
    """
    head = _read_head(path)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        members = _zip_members(path)
        tails = {PurePosixPath(*PurePosixPath(m).parts[1:]).as_posix() for m in members if "/" in m}
        if "archive_format" in tails or "serialized_exported_program.json" in members:
            return SourceKind.EXPORTED
        if "data.pkl" in tails:
            return SourceKind.PICKLE
        shown = ", ".join(members[:3]) or "no members"
        raise SourceError(f"{path}: a zip archive from neither torch.export.save nor torch.save ({shown})")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return SourceKind.PICKLE
    raise SourceError(
        f"{path}: not a model file; found {_describe(head)}",
        hint="expected a torch.export.save archive, a torch.save file, or a Hugging Face directory",
    )


def load_exported(path: str | Path, *, trust_pickle: bool = False) -> tuple[torch.export.ExportedProgram, tuple | None]:
    """Load a `torch.export.save` archive (any extension) and its stored example args.

    The example args are None when the archive stores none, or stores keyword inputs. Pickles inside
    the archive (sample inputs, pickled weights, custom objects) must load with torch's weights-only
    unpickler unless `trust_pickle`, and the archive is judged by content first (`archive_check`),
    so a crafted archive cannot run code or inflate without bound. The transformers output types
    its signature names are registered first, so saved Hugging Face programs load.
    """
    path = Path(path)
    _require_file(path)
    if classify_file(path) is not SourceKind.EXPORTED:
        raise SourceError(f"{path}: a torch.save pickle, not a torch.export archive", hint=EXPORT_HINT)
    facts = check_archive(path, trust_pickle=trust_pickle)
    register_output_types(facts.pytree_types)
    try:
        with path.open("rb") as file, _quiet("torch.export"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(file)
    except Exception as error:
        raise SourceError(f"{path}: corrupt torch.export archive: {first_line(error)}") from None
    drop_guard_code(program)
    stored = program.example_inputs
    if stored is None or stored[1]:
        return program, None
    return program, tuple(stored[0])


def load_pickle(path: str | Path, *, trust_pickle: bool = False) -> nn.Module:
    """Unpickle a `torch.save` file holding an nn.Module (on cpu, eval mode); refused unless `trust_pickle`.

    Invariant: without `trust_pickle` the file is never unpickled.
    """
    path = Path(path)
    if not trust_pickle:
        raise SourceError(
            f"refusing to unpickle {path}: loading a torch.save pickle can run arbitrary code",
            hint=f"{EXPORT_HINT}; or, if you trust the file, pass --trust-pickle (trust_pickle=True) with --input-shape",
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise SourceError(f"{path}: cannot unpickle: {first_line(error)}") from None
    if not isinstance(loaded, nn.Module):
        raise SourceError(
            f"{path} holds a {type(loaded).__name__}, not an nn.Module",
            hint=f"a state_dict needs its model class: load it into the model, then {EXPORT_HINT}",
        )
    return loaded.eval()


def resolve(
    spec: str,
    *,
    trust_pickle: bool = False,
    input_shapes: Sequence[str | Sequence[int]] | None = None,
    tiny: bool = False,
    layers: int | None = None,
    batch: int = 1,
    seq: int = 128,
    device: str = "meta",
    dynamic_batch: bool = False,
    progress: bool = True,
    trust_remote_code: bool = False,
) -> Resolved:
    """Load `spec` and export it.

    An existing path wins: a directory is a Hugging Face directory, a file is classified by content.
    Otherwise `spec` is a hub id (`org/name`) or a zoo name. `tiny`, `layers` and `device` apply to
    models built from a config (zoo, weightless directory); `batch` and `seq` shape generated inputs;
    `input_shapes` (see `InputSpec`) are required for pickled modules. Exported archives are returned
    as stored. With `progress`, a spinner runs on stderr while loading and exporting, if it is a TTY.
    A Hugging Face model's own Python code (`auto_map`) runs only with `trust_remote_code`.
    """
    path = Path(spec).expanduser()
    _require_inspectable(path)
    if path.is_dir():
        with _status(f"loading {path.name}", progress):
            model = load_hf_directory(path, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code, device=device)
        name = path.resolve().name or spec
        return _export_model(model, name, SourceKind.HF_DIR, batch, seq, dynamic_batch, progress)
    if path.exists():
        if classify_file(path) is SourceKind.EXPORTED:
            with _status(f"loading {path.name}", progress):
                program, inputs = load_exported(path, trust_pickle=trust_pickle)
            return Resolved(program, inputs, None, path.name, SourceKind.EXPORTED)
        return _resolve_pickle(path, trust_pickle, input_shapes, dynamic_batch, progress)
    if _looks_like_path(spec):
        raise SourceError(f"no such file or directory: {spec}")
    if HUB_ID.fullmatch(spec):
        with _status(f"fetching {spec}", progress):
            model = load_hub(spec, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
        return _export_model(model, spec, SourceKind.HUB, batch, seq, dynamic_batch, progress)
    model = zoo.build(spec, tiny=tiny, layers=layers, device=device)
    return _export_model(model, spec, SourceKind.ZOO, batch, seq, dynamic_batch, progress)


def _resolve_pickle(
    path: Path,
    trust_pickle: bool,
    input_shapes: Sequence[str | Sequence[int]] | None,
    dynamic_batch: bool,
    progress: bool,
) -> Resolved:
    if trust_pickle and not input_shapes:
        raise SourceError(f"{path}: a pickled module needs input shapes to export it", hint="e.g. input_shapes=['1x16:i64']")
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(InputSpec.parse(s).example(generator) for s in input_shapes or ())
    model = load_pickle(path, trust_pickle=trust_pickle)
    program = _export(model, inputs, path.name, dynamic_batch, progress)
    return Resolved(program, inputs, tensor_outputs.traceable(model), path.name, SourceKind.PICKLE)


def _export_model(model: nn.Module, name: str, kind: SourceKind, batch: int, seq: int, dynamic_batch: bool, progress: bool) -> Resolved:
    inputs = zoo.model_inputs(model, batch=batch, seq=seq)
    program = _export(model, inputs, name, dynamic_batch, progress)
    return Resolved(program, inputs, tensor_outputs.traceable(model), name, kind)


def _export(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], name: str, dynamic_batch: bool, progress: bool
) -> torch.export.ExportedProgram:
    with _status(f"exporting {name}", progress), _quiet("torch"):  # torch logs a failed trace's traceback
        try:
            return tensor_outputs.export(model, inputs, dynamic_batch=dynamic_batch)
        except Exception as error:
            raise SourceError(
                f"cannot export {name}: {first_line(error)}",
                hint="check the input shapes and dtypes; torch.export needs a traceable forward",
            ) from None


def _zip_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as error:
        raise SourceError(f"{path}: corrupt zip archive: {first_line(error)}") from None


def _read_head(path: Path) -> bytes:
    """The first 16 bytes of a regular file; anything else (a folder, a device, unreadable) is a one-line error."""
    _require_file(path)
    try:
        with path.open("rb") as file:
            return file.read(16)
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror or first_line(error)})") from None


def _require_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if path.is_dir():
        raise SourceError(f"{path}: a directory, expected a file")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")


def _require_inspectable(path: Path) -> None:
    """Stat `path` once so that a name with a NUL byte or a folder we may not search is a one-line error."""
    if "\0" in str(path):
        raise SourceError(f"{str(path)!r}: not a valid path (it holds a NUL byte)")
    try:
        path.exists()
    except (OSError, ValueError) as error:
        raise SourceError(f"{str(path)!r}: cannot inspect ({getattr(error, 'strerror', None) or first_line(error)})") from None


def _looks_like_path(spec: str) -> bool:
    """A local path, never a hub id: starts with . / ~, has a backslash, a file suffix, or 2+ slashes,
    or its first folder exists here (`models/pythia` when ./models exists)."""
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or "\\" in spec
        or Path(spec).suffix.lower() in PATH_SUFFIXES
        or ("/" in spec and Path(spec.split("/", 1)[0]).is_dir())
    )


def _describe(head: bytes) -> str:
    if not head:
        return "an empty file"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
        return "a safetensors weights file, which has no architecture: pass its directory with config.json"
    return f"first bytes {head!r}"


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger's warnings (errors are reported by the caller instead)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _status(message: str, enabled: bool) -> Iterator[None]:
    """A rich spinner on stderr while the block runs, only when enabled and stderr is a terminal."""
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield
        return
    with console.status(f"{message}..."):
        yield
