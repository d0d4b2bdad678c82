"""Training data from what the user has: text splits (train / valid / test), tokenized into int64 token streams.

`load_text_splits(data, split)` reads one of:
  - a folder of WikiText-style files: per split, `wiki.{s}.raw`, `{s}.raw`, `{s}.raw.txt` (raw flavour),
    `wiki.{s}.tokens`, `{s}.tokens`, `{s}.tokens.txt` (tokenized flavour) or `{s}.txt`; one flavour for all
    splits (`validation` is accepted for `valid`);
  - the same folder with `split="proxy"`: the offline WikiText-2 proxy (train on the valid file, validate on
    the first half of the test file's lines, test on the second half);
  - a plain text file with a split rule `"90/5/5"` (percentages of its lines, contiguous, in order);
  - a Hugging Face dataset name (needs the optional `datasets` package and the network), `name` or `name:config`.
Every `TextSplits` carries a one-line `description` of where each split came from; results quote it.
`tokenize_splits(texts, tokenizer)` encodes each split as one stream (documents are concatenated as they are).
`special_tokens(tokenizer)`: the eos/bos/pad a saved model's tokenizer declares (what lm-eval and `generate()` stop
on), found by name among the tokenizer's special tokens (see `END_OF_TEXT`).

`BlockSampler`: training batches, a token stream cut into fixed-length blocks, shuffled per epoch from the seed alone.

Invariants: the order of epoch `e` depends only on (`seed`, `e`), so a run resumed at
(epoch, batch) sees exactly the batches an uninterrupted run would; every rank of a
`world_size`-way data-parallel run gets the same number of batches per epoch and
disjoint blocks (rank r takes every world_size-th block of the shuffled order); the
tail of the stream shorter than a block, and the blocks that do not fill a last
batch on every rank, are left out of that epoch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bwsk.errors import SourceError, first_line

SPLITS = ("train", "valid", "test")
LOCAL_SUFFIXES = (".txt", ".raw", ".tokens", ".json", ".jsonl", ".csv", ".parquet")  # names that are files, not datasets
FLAVOURS = {
    "raw": ("wiki.{}.raw", "{}.raw", "{}.raw.txt"),
    "tokens": ("wiki.{}.tokens", "{}.tokens", "{}.tokens.txt"),
    "plain": ("{}.txt",),
}
ALIASES = {"valid": ("valid", "validation"), "train": ("train",), "test": ("test",)}
PROXY = "proxy"
DEFAULT_FILE_RULE = "90/5/5"
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_RULE = re.compile(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class TextSplits:
    """The text of each split and a one-line account of where it came from."""

    train: str
    valid: str
    test: str
    description: str

    def sha256(self) -> str:
        """A hash of the three texts (each length-prefixed, so text cannot move between splits unnoticed)."""
        digest = hashlib.sha256()
        for name in SPLITS:
            data = getattr(self, name).encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little") + data)
        return digest.hexdigest()


@dataclass(frozen=True)
class TokenSplits:
    """Each split as one 1-D int64 token stream, with the text's description and the tokenizer's vocabulary size."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    description: str
    vocab_size: int

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name).numel()) for name in SPLITS}


def load_text_splits(data: str | Path, split: str | None = None, *, dataset_config: str | None = None) -> TextSplits:
    """The three splits of `data` (see the module docstring); `split` is a rule ("90/5/5", "proxy") or None."""
    path = Path(data)
    if path.is_dir():
        if split not in (None, PROXY):
            raise SourceError(f"{path}: a folder has its own splits; --split {split} applies to a single text file (or use --split proxy)")
        return _proxy_splits(path) if split == PROXY else _folder_splits(path)
    if path.is_file():
        if split == PROXY:
            raise SourceError(f"{path}: --split proxy needs a WikiText folder (valid and test files), not a single file")
        return _file_splits(path, split or DEFAULT_FILE_RULE)
    if path.exists():
        raise SourceError(f"{path}: not a regular file or folder")
    if split is not None:
        raise SourceError(f"{data}: no such file or folder (a split rule applies to a local file or folder)")
    if path.suffix in LOCAL_SUFFIXES or str(data).startswith(("/", ".", "~")):
        raise SourceError(f"{data}: no such file or folder")  # a path, not a dataset name: never a download
    return _hf_dataset_splits(str(data), dataset_config)


def split_fractions(rule: str) -> tuple[float, float, float]:
    """The train/valid/test fractions of a rule like "90/5/5" (percentages summing to 100, each split non-empty)."""
    match = _RULE.fullmatch(rule.strip())
    if match is None:
        raise SourceError(f"split rule {rule!r}: expected TRAIN/VALID/TEST percentages such as 90/5/5, or 'proxy'")
    parts = tuple(float(group) for group in match.groups())
    if abs(sum(parts) - 100) > 1e-9 or min(parts) <= 0:
        raise SourceError(f"split rule {rule!r}: the three percentages must be positive and sum to 100")
    return parts[0] / 100, parts[1] / 100, parts[2] / 100


def tokenizer_file(path: str | Path) -> Path:
    """The tokenizer.json file `path` names: itself, or the one in the folder it names."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise SourceError(f"{path}: no tokenizer.json there (pass --tokenizer PATH/tokenizer.json)")
    return file


def load_tokenizer(path: str | Path):
    """A `tokenizers.Tokenizer` from a tokenizer.json file, or from a folder holding one."""
    from tokenizers import Tokenizer

    file = tokenizer_file(path)
    try:
        return Tokenizer.from_file(str(file))
    except Exception as error:
        raise SourceError(f"{file}: not a tokenizers JSON file: {first_line(error)}") from None


END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")  # GPT-2 and GPT-NeoX/Pythia, Llama 3, Llama 2/Mistral/OPT, Gemma
BEGIN_OF_TEXT = ("<|begin_of_text|>", "<s>", "<bos>")  # Llama 3, Llama 2/Mistral/OPT, Gemma
PADDING = ("<|padding|>", "<pad>", "[PAD]")  # GPT-NeoX, OPT/T5/Gemma, BERT-style


def special_tokens(tokenizer) -> dict[str, str]:
    """The eos, bos and pad tokens of a `tokenizers.Tokenizer`, as `PreTrainedTokenizerFast` keywords; {} without an eos.

    Rule: eos is the first name of `END_OF_TEXT` that the tokenizer holds as a special token; bos the first of
    `BEGIN_OF_TEXT`, else the eos (GPT-2's and GPT-NeoX's convention); pad the first of `PADDING`, else the eos.
    """
    held = {token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special}
    eos = next((name for name in END_OF_TEXT if name in held), None)
    if eos is None:
        return {}
    bos = next((name for name in BEGIN_OF_TEXT if name in held), eos)
    pad = next((name for name in PADDING if name in held), eos)
    return {"eos_token": eos, "bos_token": bos, "pad_token": pad}


def require_special_tokens(tokenizer, source: str | Path) -> dict[str, str]:
    """`special_tokens(tokenizer)`, refused in one line when the tokenizer (read from `source`) has no end-of-text token."""
    found = special_tokens(tokenizer)
    if not found:
        raise SourceError(
            f"{source}: none of {', '.join(END_OF_TEXT)} is a special token of this tokenizer, and a published model needs an "
            'end-of-text token (lm-eval, generate()); add one (tokenizer.add_special_tokens(["<|endoftext|>"])) and save it again'
        )
    return found


def tokenize_splits(texts: TextSplits, tokenizer) -> TokenSplits:
    """Encode each split as one token stream (no special tokens added); an empty split is refused."""
    streams = {}
    for name in SPLITS:
        ids = tokenizer.encode(getattr(texts, name), add_special_tokens=False).ids
        if len(ids) < 2:
            raise SourceError(f"the {name} split has {len(ids)} token(s); each split needs at least 2 ({texts.description})")
        streams[name] = torch.tensor(ids, dtype=torch.long)
    return TokenSplits(**streams, description=texts.description, vocab_size=tokenizer.get_vocab_size())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SourceError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror or first_line(error)})") from None


def _find_split_files(folder: Path, needed: tuple[str, ...]) -> dict[str, Path]:
    """One file per needed split, all of one flavour (the first flavour, in FLAVOURS order, that has them all)."""
    for patterns in FLAVOURS.values():
        found = {}
        for split in needed:
            candidates = [folder / p.format(alias) for p in patterns for alias in ALIASES[split]]
            existing = [c for c in candidates if c.is_file()]
            if existing:
                found[split] = existing[0]
        if len(found) == len(needed):
            return found
    wanted = ", ".join(needed)
    hint = "or pass --split proxy (train on valid, validate and test on halves of test)" if "train" in needed else ""
    raise SourceError(
        f"{folder}: no WikiText-style files for the {wanted} split(s) (expected e.g. wiki.train.raw or train.tokens)", hint=hint or None
    )


def _folder_splits(folder: Path) -> TextSplits:
    files = _find_split_files(folder, SPLITS)
    texts = {split: _read(files[split]) for split in SPLITS}
    names = ", ".join(f"{split}={files[split].name}" for split in SPLITS)
    return TextSplits(**texts, description=f"{folder}: {names}")


def _proxy_splits(folder: Path) -> TextSplits:
    files = _find_split_files(folder, ("valid", "test"))
    lines = _read(files["test"]).splitlines(keepends=True)
    half = len(lines) // 2
    return TextSplits(
        train=_read(files["valid"]),
        valid="".join(lines[:half]),
        test="".join(lines[half:]),
        description=(
            f"offline proxy in {folder}: train={files['valid'].name}, valid={files['test'].name} lines 1-{half}, "
            f"test={files['test'].name} lines {half + 1}-{len(lines)} (not the standard train split)"
        ),
    )


def _file_splits(path: Path, rule: str) -> TextSplits:
    train_share, valid_share, _ = split_fractions(rule)
    lines = _read(path).splitlines(keepends=True)
    train_end = round(len(lines) * train_share)
    valid_end = round(len(lines) * (train_share + valid_share))
    if not 0 < train_end < valid_end < len(lines):
        raise SourceError(f"{path}: {len(lines)} line(s) are too few to split {rule}")
    return TextSplits(
        train="".join(lines[:train_end]),
        valid="".join(lines[train_end:valid_end]),
        test="".join(lines[valid_end:]),
        description=f"{path} split {rule} by lines, in order: train 1-{train_end}, valid {train_end + 1}-{valid_end}, "
        f"test {valid_end + 1}-{len(lines)}",
    )


def _hf_dataset_splits(name: str, config: str | None) -> TextSplits:
    if ":" in name and config is None:
        name, config = name.split(":", 1)
    try:
        import datasets
    except ImportError:
        raise SourceError(
            f"{name}: no such file or folder; reading it as a Hugging Face dataset needs the `datasets` package (pip install datasets)"
        ) from None
    try:
        loaded = datasets.load_dataset(name, config)
        texts = {split: "".join(_as_line(row) for row in loaded[HF_SPLITS[split]]["text"]) for split in SPLITS}
    except Exception as error:
        raise SourceError(f"cannot load Hugging Face dataset {name!r}: {first_line(error)}") from None
    label = f"{name}:{config}" if config else name
    return TextSplits(**texts, description=f"Hugging Face dataset {label}: splits train, validation, test (column text)")


def _as_line(row: str) -> str:
    return row if row.endswith("\n") else row + "\n"


@dataclass(frozen=True)
class BlockSampler:
    """Batches of `batch_size` blocks of `seq_len` tokens from `tokens`, for rank `rank` of `world_size`."""

    tokens: torch.Tensor
    seq_len: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        if self.batches_per_epoch < 1:
            raise SourceError(
                f"the train split has {self.tokens.numel():,} tokens: fewer than one batch of {self.batch_size} x {self.seq_len} "
                f"on each of {self.world_size} rank(s) (lower --batch-size or --seq-len)"
            )

    @property
    def blocks(self) -> int:
        return self.tokens.numel() // self.seq_len

    @property
    def batches_per_epoch(self) -> int:
        return self.blocks // (self.batch_size * self.world_size)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's block indices for `epoch`, shape (batches_per_epoch, batch_size)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        shuffled = torch.randperm(self.blocks, generator=generator)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        return shuffled[:used][self.rank :: self.world_size].view(self.batches_per_epoch, self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """The batches of `epoch` from batch index `start` on, each (batch_size, seq_len) int64 on the cpu."""
        blocks = self.tokens[: self.blocks * self.seq_len].view(self.blocks, self.seq_len)
        for indices in self.order(epoch)[start:]:
            yield blocks[indices]
