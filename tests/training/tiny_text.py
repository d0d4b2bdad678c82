"""The training tests' own text and tokenizer: a small made-up language a tiny model learns within a few steps."""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ("the cat", "a dog", "the old bird", "my friend", "the teacher", "a child", "the river", "our neighbour")
VERBS = ("sees", "likes", "follows", "draws", "finds", "hears", "counts", "paints")
OBJECTS = ("the moon", "a red house", "seven stones", "the garden", "a small boat", "the tall tree", "two letters", "the bridge")


def tiny_text(lines: int = 240, seed: int = 0) -> str:
    """`lines` lines of four sentences each, drawn from a fixed grammar."""
    rng = random.Random(seed)
    rows = []
    for _ in range(lines):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ." for _ in range(4)]
        rows.append(" ".join(sentences) + "\n")
    return "".join(rows)


def tiny_tokenizer(text: str):
    """A word-level `tokenizers.Tokenizer` trained on `text` (whitespace-split words, plus [UNK]), with the end-of-text
    token `<|endoftext|>` added last (the words keep their ids; a published model's tokenizer needs one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tokenizer.add_special_tokens(["<|endoftext|>"])
    return tokenizer


def write_corpus(folder: Path, *, lines: int = 240) -> tuple[Path, Path]:
    """A text file and its tokenizer.json in `folder`; returns (text file, tokenizer file)."""
    text = tiny_text(lines)
    corpus, tokenizer_file = folder / "corpus.txt", folder / "tokenizer.json"
    corpus.write_text(text)
    tiny_tokenizer(text).save(str(tokenizer_file))
    return corpus, tokenizer_file
