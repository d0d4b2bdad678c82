"""The functions of bwsk's local lm-eval task, copied unchanged beside the task's YAML (lm-eval imports them by `!function`).

Self-contained (the standard library and `datasets`, which lm-eval depends on): the task folder runs with lm-eval alone.
`documents` reads the JSON Lines file beside this file (so the folder may move); `process_results` turns a
document's rolling log-likelihood into the task's metrics, each a (log-likelihood, count) pair that lm-eval's
`weighted_perplexity` aggregation sums over documents: exp(-sum log-likelihood / sum count).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DOCUMENTS_FILE = "bwsk_test_split.jsonl"


def documents(**_: Any) -> dict[str, Any]:
    """The task's one split, "test": the documents of `DOCUMENTS_FILE` (lm-eval passes the task's metadata; unused)."""
    import datasets

    lines = (Path(__file__).with_name(DOCUMENTS_FILE)).read_text(encoding="utf-8").splitlines()
    return {"test": datasets.Dataset.from_list([json.loads(line) for line in lines if line])}


def process_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """Per document: tokens (counted with the model's tokenizer when the task was written), words and bytes (lm-eval's rules)."""
    (loglikelihood,) = results
    text = doc["text"]
    size = len(text.encode("utf-8"))
    return {
        "token_perplexity": (loglikelihood, doc["tokens"]),
        "word_perplexity": (loglikelihood, len(re.split(r"\s+", text))),
        "byte_perplexity": (loglikelihood, size),
        "bits_per_byte": (loglikelihood, size),
    }
