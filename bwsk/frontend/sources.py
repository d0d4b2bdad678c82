"""Recognise what the user passed (by content, never by extension) and turn it into an ExportedProgram.

A source is one of: a `torch.export.save` archive, a `torch.save` pickle (zip or legacy), a local
Hugging Face directory, a zoo name, or a Hugging Face Hub id (`org/name`). Nothing is unpickled
unless the caller passes `trust_pickle=True`. Every failure is a one-line `SourceError`.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from rich.console import Console
from torch import nn

from bwsk.errors import SourceError
from bwsk.frontend import zoo

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
    `zoo.traceable`). `module` is None for exported archives.
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
        """A random tensor: floats from N(0, 1); integers from {0, 1}, valid ids for any embedding."""
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, generator=generator).to(self.dtype)
        return torch.randint(0, 2, self.shape, generator=generator, dtype=self.dtype)


def classify_file(path: Path) -> SourceKind:
    """EXPORTED or PICKLE, decided from the first bytes and, for zips, member names only.

    A `torch.export.save` zip has a `<root>/archive_format` member (or, from torch <= 2.7, a top-level
    `serialized_exported_program.json`); a `torch.save` zip has `<root>/data.pkl`. A legacy
    `torch.save` file is a raw pickle (protocol 2+ starts with 0x80). Anything else is an error.
    """
    with path.open("rb") as file:
        head = file.read(16)
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
    unpickler unless `trust_pickle`, so a crafted archive cannot run code.
    """
    path = Path(path)
    _require_file(path)
    if classify_file(path) is not SourceKind.EXPORTED:
        raise SourceError(f"{path}: a torch.save pickle, not a torch.export archive", hint=EXPORT_HINT)
    if not trust_pickle:
        _check_archive_pickles(path)
    try:
        with path.open("rb") as file, _quiet("torch.export"):
            program = torch.export.load(file)
    except Exception as error:
        raise SourceError(f"{path}: corrupt torch.export archive: {_first_line(error)}") from None
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
        raise SourceError(f"{path}: cannot unpickle: {_first_line(error)}") from None
    if not isinstance(loaded, nn.Module):
        raise SourceError(
            f"{path} holds a {type(loaded).__name__}, not an nn.Module",
            hint=f"a state_dict needs its model class: load it into the model, then {EXPORT_HINT}",
        )
    return loaded.eval()


def load_hf_directory(
    path: str | Path, *, trust_pickle: bool = False, device: str = "meta", seed: int = 0
) -> nn.Module:
    """A transformers model (eval mode, eager attention, no KV cache) from a directory with config.json.

    The class is the config's first `architectures` entry known to transformers (else the bare
    AutoModel class). `*.safetensors` weights are loaded on cpu; without weight files the model is
    randomly initialised from `seed` on `device`. `*.bin` weights are pickles: refused unless `trust_pickle`.
    """
    import transformers

    path = Path(path)
    if not (path / "config.json").is_file():
        raise SourceError(f"{path}: a directory without config.json, so not a Hugging Face model directory")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as error:
        raise SourceError(f"{path / 'config.json'}: unreadable config: {_first_line(error)}") from None
    model_class = _architecture_class(config)
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickles = any(path.glob("*.bin"))
    if has_pickles and not has_safetensors and not trust_pickle:
        raise SourceError(
            f"refusing to unpickle the *.bin weights in {path}",
            hint="save them as safetensors (model.save_pretrained(dir)), or pass --trust-pickle (trust_pickle=True) if you trust them",
        )
    try:
        if has_safetensors or has_pickles:
            with _no_transformers_progress_bars():
                model = model_class.from_pretrained(
                    path, attn_implementation="eager", use_safetensors=has_safetensors
                )
        else:
            with torch.random.fork_rng(devices=[]), torch.device(device):
                torch.manual_seed(seed)
                model = model_class._from_config(config, attn_implementation="eager")
    except Exception as error:
        raise SourceError(f"{path}: cannot build {model_class.__name__}: {_first_line(error)}") from None
    model.config.use_cache = False
    return model.eval()


def load_hub(model_id: str, *, trust_pickle: bool = False) -> nn.Module:
    """A transformers model fetched from the Hugging Face Hub (needs the network or a warm cache)."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(model_id)
        model = _architecture_class(config).from_pretrained(
            model_id, attn_implementation="eager", use_safetensors=None if trust_pickle else True
        )
    except SourceError:
        raise
    except Exception as error:
        raise SourceError(
            f"cannot fetch {model_id!r} from the Hugging Face Hub: {_first_line(error)}",
            hint="no network, or no such model; pass a local directory, a .pt2 file or a zoo name instead",
        ) from None
    model.config.use_cache = False
    return model.eval()


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
) -> Resolved:
    """Load `spec` and export it.

    An existing path wins: a directory is a Hugging Face directory, a file is classified by content.
    Otherwise `spec` is a hub id (`org/name`) or a zoo name. `tiny`, `layers` and `device` apply to
    models built from a config (zoo, weightless directory); `batch` and `seq` shape generated inputs;
    `input_shapes` (see `InputSpec`) are required for pickled modules. Exported archives are returned
    as stored. With `progress`, a spinner runs on stderr while loading and exporting, if it is a TTY.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        with _status(f"loading {path.name}", progress):
            model = load_hf_directory(path, trust_pickle=trust_pickle, device=device)
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
            model = load_hub(spec, trust_pickle=trust_pickle)
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
        raise SourceError(
            f"{path}: a pickled module needs input shapes to export it", hint="e.g. input_shapes=['1x16:i64']"
        )
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(InputSpec.parse(s).example(generator) for s in input_shapes or ())
    model = load_pickle(path, trust_pickle=trust_pickle)
    program = _export(model, inputs, path.name, dynamic_batch, progress)
    return Resolved(program, inputs, zoo.traceable(model), path.name, SourceKind.PICKLE)


def _export_model(
    model: nn.Module, name: str, kind: SourceKind, batch: int, seq: int, dynamic_batch: bool, progress: bool
) -> Resolved:
    inputs = zoo.model_inputs(model, batch=batch, seq=seq)
    program = _export(model, inputs, name, dynamic_batch, progress)
    return Resolved(program, inputs, zoo.traceable(model), name, kind)


def _export(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], name: str, dynamic_batch: bool, progress: bool
) -> torch.export.ExportedProgram:
    with _status(f"exporting {name}", progress):
        try:
            return zoo.export(model, inputs, dynamic_batch=dynamic_batch)
        except Exception as error:
            raise SourceError(
                f"cannot export {name}: {_first_line(error)}",
                hint="check the input shapes and dtypes; torch.export needs a traceable forward",
            ) from None


def _check_archive_pickles(path: Path) -> None:
    """Raise unless every pickle inside the archive loads with torch's weights-only unpickler."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in _pickled_members(path, archive):
                data = archive.read(member)
                if data:  # an archive without example inputs stores an empty member
                    torch.load(io.BytesIO(data), weights_only=True)
    except pickle.UnpicklingError as error:
        raise SourceError(
            f"{path}: the archive holds a pickle that weights-only loading rejects: {_first_line(error)}",
            hint="pass --trust-pickle (trust_pickle=True) if you trust the file",
        ) from None
    except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, EOFError) as error:
        raise SourceError(f"{path}: corrupt torch.export archive: {_first_line(error)}") from None


def _pickled_members(path: Path, archive: zipfile.ZipFile) -> list[str]:
    """Members `torch.export.load` unpickles: example inputs, weights and constants marked `use_pickle`.

    Opaque pickled objects (custom classes) cannot be checked, so they raise SourceError.
    """
    members = archive.namelist()
    pickled = [m for m in members if "/data/sample_inputs/" in m or ("/" not in m and m.endswith(".pt"))]
    for member in members:
        if "/data/" not in member:
            continue
        if PurePosixPath(member).name.startswith(("custom_obj_", "opaque_obj_")):
            raise SourceError(
                f"{path}: archive member {member} is an opaque pickled object",
                hint="pass --trust-pickle (trust_pickle=True) if you trust the file",
            )
        if member.endswith(("_weights_config.json", "_constants_config.json")):
            folder = PurePosixPath(member).parent
            entries = json.loads(archive.read(member))["config"].values()
            pickled += [str(folder / entry["path_name"]) for entry in entries if entry["use_pickle"]]
    return pickled


def _architecture_class(config: Any) -> type:
    import transformers

    for name in config.architectures or ():
        found = getattr(transformers, name, None)
        if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
            return found
    try:
        return transformers.MODEL_MAPPING[type(config)]
    except KeyError:
        raise SourceError(
            f"transformers has no model class for architectures {config.architectures} ({config.model_type})"
        ) from None


def _zip_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise SourceError(f"{path}: corrupt zip archive: {_first_line(error)}") from None


def _require_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    if path.is_dir():
        raise SourceError(f"{path}: a directory, expected a file")


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or "\\" in spec
        or Path(spec).suffix.lower() in PATH_SUFFIXES
    )


def _describe(head: bytes) -> str:
    if not head:
        return "an empty file"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
        return "a safetensors weights file, which has no architecture: pass its directory with config.json"
    return f"first bytes {head!r}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


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
def _no_transformers_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def _status(message: str, enabled: bool) -> Iterator[None]:
    """A rich spinner on stderr while the block runs, only when enabled and stderr is a terminal."""
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield
        return
    with console.status(f"{message}..."):
        yield
