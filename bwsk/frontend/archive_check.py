"""Judge a torch.export archive by its content before `torch.export.load` reads a byte of it.

`torch.export.load` unpickles members (example inputs, pickled weights and constants, the
legacy layouts' `*.pt` members), hands opaque objects to `pickle.loads`, loads AOTInductor
shared libraries, parses symbolic expressions with `sympy.sympify` (an `eval`) and writes
graph names into Python source that it executes. `check_archive` refuses every archive in
which one of those could run code, and every archive whose zip structure two readers could
disagree about (torch reads members with miniz, case-insensitively; Python's zipfile is
case-sensitive): duplicate names, names that differ only in case, names outside the one top
folder, data before the first member, members torch would not read.

Invariant: nothing is inflated beyond the sizes the central directory declares, and the
declared total is bounded by the file size (`MAX_INFLATION_RATIO`, `INFLATION_ALLOWANCE`),
so a zip bomb is refused from its directory, and a stream that lies about its size fails
its length or CRC check while it is read in chunks.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bwsk.errors import SourceError, first_line

MAX_INFLATION_RATIO = 100
INFLATION_ALLOWANCE = 256 * 2**20
MAX_JSON_BYTES = 256 * 2**20
CHUNK_BYTES = 2**20
TRUST_HINT = "pass --trust-pickle (trust_pickle=True) if you trust the file"

# Members every torch.export.save archive holds beside its models (relative to its top folder).
BOOKKEEPING = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
# Folders whose content torch.export.load runs as compiled code, or does not read at all.
FOREIGN_FOLDERS = ("data/aotinductor/", "data/executorch/", "data/mtia/", "xl_model_weights/")
# The flat layout of torch <= 2.7: member -> how torch reads it.
LEGACY_MEMBERS = {
    "version": "text",
    "serialized_exported_program.json": "program",
    "serialized_state_dict.pt": "pickle",
    "serialized_constants.pt": "pickle",
    "serialized_example_inputs.pt": "pickle",
    "serialized_state_dict.json": "pickle",  # despite the name, torch.load reads it
    "serialized_constants.json": "pickle",
}
# Symbolic expressions are sympy `srepr` text: calls of these, symbol names or numbers in quotes, literals.
SYMPY_CALLS = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Mod", "Abs", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "Equality", "Unequality", "And", "Or", "Not", "Piecewise", "ExprCondPair", "Tuple",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "OpaqueUnaryFn_sqrt",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor",
}  # fmt: skip
SYMPY_LITERALS = {"True", "False", "oo", "zoo", "nan", "S", "true", "false", "Infinity", "NegativeInfinity"}
SYMPY_TOKEN = re.compile(r"\s+|'[A-Za-z0-9_.+-]{1,64}'|\d+(?:\.\d*)?(?:e[+-]?\d+)?|[A-Za-z][A-Za-z0-9_]*|[-+*/(),=]")
MAX_EXPRESSION_CHARS = 100_000


@dataclass
class ArchiveFacts:
    """What the check learned: the pytree type names the programs' signatures use (for registration)."""

    pytree_types: set[str] = field(default_factory=set)


def check_archive(path: Path, *, trust_pickle: bool) -> ArchiveFacts:
    """Raise SourceError unless `path` is a well-formed torch.export archive torch can load without running code.

    With `trust_pickle`, pickles and opaque objects are not judged; structure, sizes and the
    program text still are.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = _checked_members(path, archive)
            roles = _roles(path, archive, members)
            facts = ArchiveFacts()
            for name, role in roles.items():
                info = members[name]
                if role == "program":
                    _check_program_text(path, name, _read_json(path, archive, info), facts)
                    continue
                _check_stream(path, archive, info)
                if trust_pickle or role == "payload":  # raw tensor bytes are never unpickled
                    continue
                if role == "object":
                    raise SourceError(f"{path}: archive member {_shown(name)} is an opaque pickled object", hint=TRUST_HINT)
                if role == "pickle" or _looks_pickled(archive, info):
                    _check_weights_only(path, archive, info)
            return facts
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, UnicodeDecodeError, NotImplementedError) as error:
        raise SourceError(f"{path}: corrupt zip archive: {first_line(error)}") from None


def drop_guard_code(program: torch.export.ExportedProgram) -> None:
    """Forget the archive's guard expressions, which `ExportedProgram.module()` would compile into Python source.

    bwsk runs programs on their own example inputs and needs no guards. (Calls that are not
    operators are refused by torch's own verifier while the archive loads.)
    """
    if hasattr(program, "_guards_code"):
        program._guards_code = []


def _checked_members(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    declared, folded = 0, {}
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        _check_name(path, name, info.orig_filename)
        if name in members:
            raise SourceError(f"{path}: archive member {_shown(name)} occurs twice")
        if name.casefold() in folded:
            raise SourceError(f"{path}: archive members {_shown(folded[name.casefold()])} and {_shown(name)} differ only in case")
        if info.flag_bits & 0x1:
            raise SourceError(f"{path}: archive member {_shown(name)} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise SourceError(f"{path}: archive member {_shown(name)} uses a compression torch cannot read")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise SourceError(f"{path}: corrupt zip archive: stored member {_shown(name)} has two different sizes")
        folded[name.casefold()] = name
        members[name] = info
        declared += info.file_size
    if infos and min(info.header_offset for info in infos) != 0:
        raise SourceError(f"{path}: corrupt zip archive: data before the first member")
    limit = INFLATION_ALLOWANCE + MAX_INFLATION_RATIO * path.stat().st_size
    if declared > limit:
        raise SourceError(
            f"{path}: refusing an archive that inflates to {declared:,} bytes from {path.stat().st_size:,} "
            f"(more than {MAX_INFLATION_RATIO}x its size plus {INFLATION_ALLOWANCE // 2**20} MiB: a zip bomb?)"
        )
    return members


def _check_name(path: Path, name: str, raw: str) -> None:
    parts = name.split("/")
    if (
        raw != name
        or not name
        or name.startswith("/")
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or any(part in ("", ".", "..") or part.endswith(":") for part in parts)
    ):
        raise SourceError(f"{path}: invalid archive member name {_shown(raw)} (absolute, escaping or malformed)")


def _roles(path: Path, archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> dict[str, str]:
    """How torch reads each member, mirroring `torch.export.load`: program (JSON), pickle, payload (raw tensor
    bytes), object (opaque pickled object) or text; a member torch would not read, or would run, is refused."""
    names = list(members)
    if all("/" not in name for name in names):
        return {name: _legacy_role(path, name) for name in names}
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        shown = ", ".join(sorted(_shown(r) for r in roots)[:3])
        raise SourceError(f"{path}: archive members lie outside one top folder ({shown})")
    relative = {name.split("/", 1)[1]: name for name in names}
    roles: dict[str, str] = {}
    for inner, name in relative.items():
        if inner.startswith(FOREIGN_FOLDERS):
            raise SourceError(
                f"{path}: archive member {_shown(name)} is compiled code or a layout bwsk does not read (AOTInductor, ExecuTorch)"
            )
        if inner in BOOKKEEPING or inner.startswith("extra/"):
            roles[name] = "text"
        elif inner.startswith("models/") and inner.endswith(".json") and inner.count("/") == 1:
            roles[name] = "program"
            model = inner[len("models/") : -len(".json")]
            _expect(path, relative, f"data/sample_inputs/{model}.pt", "pickle", roles)
            for folder, kind in (("weights", "weights"), ("constants", "constants")):
                legacy = f"data/{folder}/{model}.pt"
                if legacy in relative:
                    roles[relative[legacy]] = "pickle"
                else:
                    config = _expect(path, relative, f"data/{folder}/{model}_{kind}_config.json", "text", roles)
                    _payload_roles(path, archive, members[config], f"data/{folder}/", relative, roles)
    for name in relative.values():
        if name not in roles:
            raise SourceError(f"{path}: archive member {_shown(name)} is not part of a torch.export archive")
    return roles


def _legacy_role(path: Path, name: str) -> str:
    if name in LEGACY_MEMBERS:
        return LEGACY_MEMBERS[name]
    raise SourceError(f"{path}: archive member {_shown(name)} is not part of a torch.export archive")


def _expect(path: Path, relative: dict[str, str], inner: str, role: str, roles: dict[str, str]) -> str:
    if inner not in relative:
        raise SourceError(f"{path}: corrupt torch.export archive: member {inner} is missing")
    roles[relative[inner]] = role
    return relative[inner]


def _payload_roles(
    path: Path, archive: zipfile.ZipFile, config: zipfile.ZipInfo, folder: str, relative: dict[str, str], roles: dict[str, str]
) -> None:
    """Members a weights or constants config names: raw tensor bytes, pickles (`use_pickle`) or opaque objects."""
    try:
        entries = _read_json(path, archive, config)["config"].values()
        references = [(str(entry["path_name"]), bool(entry.get("use_pickle"))) for entry in entries]
    except (KeyError, TypeError, AttributeError):
        raise SourceError(f"{path}: corrupt torch.export archive: malformed {config.filename}") from None
    rank = {"payload": 0, "pickle": 1, "object": 2}
    for file_name, use_pickle in references:
        inner = folder + file_name
        if "/" in file_name or "\\" in file_name or inner not in relative:
            raise SourceError(f"{path}: corrupt torch.export archive: {config.filename} names a missing member {_shown(file_name)}")
        role = "object" if file_name.startswith(("custom_obj_", "opaque_obj_")) else "pickle" if use_pickle else "payload"
        name = relative[inner]
        if rank[role] >= rank.get(roles.get(name, "payload"), 0):
            roles[name] = role


def _stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes in chunks; zipfile stops at the declared size and checks the CRC at the end."""
    with archive.open(info) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _check_stream(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Inflate a deflated member in chunks (never whole) to prove its stream is sound; stored ones are read by torch."""
    if info.compress_type == zipfile.ZIP_STORED:
        return
    try:
        for _ in _stream(archive, info):
            pass
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise SourceError(f"{path}: corrupt member {_shown(info.filename)}: {first_line(error)}") from None


def _read_json(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > MAX_JSON_BYTES:
        raise SourceError(f"{path}: archive member {_shown(info.filename)} is {info.file_size:,} bytes, too large for a program text")
    try:
        return json.loads(b"".join(_stream(archive, info)))
    except (ValueError, RecursionError) as error:
        raise SourceError(f"{path}: corrupt torch.export archive: {_shown(info.filename)} is not JSON ({first_line(error)})") from None


def _looks_pickled(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """A pickle of protocol 2 or later (PROTO opcode), or a zip (what `torch.load` unpickles from)."""
    with archive.open(info) as handle:
        head = handle.read(4)
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _check_weights_only(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Load the member with torch's weights-only unpickler, streamed from the archive (an empty member is no pickle)."""
    if info.file_size == 0:
        return
    try:
        with archive.open(info) as handle:
            torch.load(handle, weights_only=True, map_location="cpu")
    except Exception as error:
        raise SourceError(
            f"{path}: archive member {_shown(info.filename)} is a pickle that weights-only loading rejects: {first_line(error)}",
            hint=TRUST_HINT,
        ) from None


def _check_program_text(path: Path, member: str, program: Any, facts: ArchiveFacts) -> None:
    """Refuse text torch would execute: names written into generated Python, symbolic expressions given to sympify.

    Names of graph values and keyword arguments become Python identifiers in the code FX generates,
    so each must be one (or empty: a positional argument);
    no string may hold a carriage return (a line break to Python, not to FX's comment writer).
    """
    for key, value in _strings(program):
        if "\r" in value or "\0" in value:
            raise SourceError(f"{path}: {_shown(member)} holds a string with a carriage return or NUL")
        if key in ("name", "as_name") and value and not value.isidentifier():
            raise SourceError(f"{path}: {_shown(member)} names a value {_shown(value)}, which is not an identifier")
        if key == "expr_str":
            _check_expression(path, member, value)
        if key in ("in_spec", "out_spec") and value:
            facts.pytree_types |= _treespec_types(path, member, value)


def _strings(value: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    """Every string in a JSON value with the key it sits under (list items inherit their list's key); iterative."""
    stack = [(key, value)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, dict):
            stack.extend((k, v) for k, v in value.items())
            stack.extend((None, k) for k in value if isinstance(k, str))
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)


def _check_expression(path: Path, member: str, text: str) -> None:
    """A sympy `srepr` expression: allowed calls, quoted symbol names or numbers, integers, literals; nothing else."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise SourceError(f"{path}: {_shown(member)} holds a symbolic expression of {len(text):,} characters")
    position = 0
    tokens = []
    while position < len(text):
        match = SYMPY_TOKEN.match(text, position)
        if match is None:
            raise SourceError(f"{path}: {_shown(member)} holds a symbolic expression bwsk will not evaluate: {_shown(text)}")
        tokens.append(match.group())
        position = match.end()
    words = [t for t in tokens if not t.isspace()]
    for index, word in enumerate(words):
        if not (word[0].isalpha()):
            continue
        following = words[index + 1] if index + 1 < len(words) else ""
        allowed = SYMPY_CALLS if following == "(" else SYMPY_ASSUMPTIONS if following == "=" else SYMPY_LITERALS
        if word not in allowed:
            raise SourceError(f"{path}: {_shown(member)} holds a symbolic expression bwsk will not evaluate: {_shown(text)}")


def _treespec_types(path: Path, member: str, text: str) -> set[str]:
    """The `type` names in a serialized pytree spec (`[protocol, {"type", "context", "children_spec"}]`)."""
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        raise SourceError(f"{path}: corrupt torch.export archive: {_shown(member)} holds a malformed pytree spec") from None
    return {value for key, value in _strings(spec) if key == "type"}


SYMPY_ASSUMPTIONS = {
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero", "even", "odd",
    "precision", "evaluate", "commutative", "extended_real", "rational", "boolean",
}  # fmt: skip


def _shown(text: str, limit: int = 80) -> str:
    """A name as it can be printed on one line: escaped (repr) and shortened."""
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
