"""Stock evaluation: a local lm-eval task from the run's own test split, lm-eval's `HFLM` on every variant, and bwsk's
prediction of the perplexity lm-eval reports.

    write_task(OUT / "lm_eval", test_text, tokenizer)   # TASK.yaml, its documents (JSON Lines), its functions file
    lm_eval --model hf --model_args pretrained=OUT/VARIANT --include_path OUT/lm_eval --tasks bwsk_test_perplexity
    evaluate_variant(OUT / VARIANT, OUT / "lm_eval")    # the same in-process, with bwsk's prediction beside it

The task (no download): one document, the whole test split text the trainer scored (so the same token stream as
`tokenize_splits`, for a tokenizer that adds no special tokens), `output_type: loglikelihood_rolling`. Its metric
`token_perplexity` is exp(-sum of the documents' log-likelihoods / sum of their tokens): lm-eval's own
`weighted_perplexity` aggregation over (log-likelihood, tokens) pairs, the token count of each document written into
the document when the task is written (`lm_eval_tokens` with the model's tokenizer: valid for models sharing that
tokenizer). word_perplexity, byte_perplexity and bits_per_byte are lm-eval's usual rolling metrics.

lm-eval's rolling windows (`HFLM.loglikelihood_rolling`, lm-eval 0.4): a document's tokens t are prefixed with the
prefix token (bos, else eos: `prefix_token_id`) and scored in disjoint windows of `max_length` = L predicted tokens;
a window's input is the L tokens before its last predicted token. Every token of t is scored once (the first given
the prefix alone); documents are scored separately. In bwsk's `windows` over the stream [prefix] + t that is window
L + 1 with stride L: the same targets with the same contexts. `score_windows` feeds the L + 1 tokens (the last one
only as a target), and a causal model's logits at the first L positions are those of lm-eval's L-token input; so the
model must accept L + 1 positions (rotary models do; learned absolute positions need max_length below their count).
The trainer's recorded perplexity uses strided windows (more context per token), so it is lower than this one.
"""

from __future__ import annotations

import json
import math
import sys
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwsk.atomic import write_atomic
from bwsk.errors import BwskError
from bwsk.training.distributed import resolve_device
from bwsk.training.experiments import lm_eval_task_functions as functions
from bwsk.training.experiments.report import write_experiment_outputs
from bwsk.training.experiments.runs import RunSpec
from bwsk.training.reversible.huggingface import register
from bwsk.training.trainer.data import load_text_splits
from bwsk.training.trainer.evaluation import Perplexity, score_windows

TASK = "bwsk_test_perplexity"
TASK_FOLDER = "lm_eval"
FUNCTIONS_FILE = "bwsk_lm_eval_task.py"
METRICS = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
EXTRA = "pip install 'bwsk[eval]'"
TASK_FILES = (f"{TASK}.yaml", functions.DOCUMENTS_FILE, FUNCTIONS_FILE)  # what `write_task` writes (and --force removes)


def require_lm_eval() -> None:
    """Refuse in one line when lm-eval is not installed (it is an extra, not a dependency)."""
    if find_spec("lm_eval") is None:
        raise BwskError(f"--eval lm-eval needs lm-eval, which is not installed: {EXTRA}")


def task_yaml() -> str:
    """The task's YAML: the documents and metrics come from the functions file beside it."""
    module = FUNCTIONS_FILE.removesuffix(".py")
    aggregations = {"token_perplexity": "weighted_perplexity", "word_perplexity": "weighted_perplexity"}
    aggregations |= {"byte_perplexity": "weighted_perplexity", "bits_per_byte": "bits_per_byte"}
    metrics = "".join(f"  - metric: {name}\n    aggregation: {aggregations[name]}\n    higher_is_better: false\n" for name in METRICS)
    return (
        f"# written by bwsk: the experiment's test split as one document (see {FUNCTIONS_FILE})\n"
        f"task: {TASK}\n"
        f"custom_dataset: !function {module}.documents\n"
        "test_split: test\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        f"process_results: !function {module}.process_results\n"
        f"metric_list:\n{metrics}"
        "metadata:\n  version: 1.0\n"
    )


def prefix_token_id(tokenizer) -> int:
    """The token lm-eval conditions a document's first token on: bos, else eos."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def lm_eval_tokens(tokenizer, text: str) -> list[int]:
    """`text` encoded as lm-eval's HFLM encodes a document: the tokenizer's defaults, without special tokens when the
    text already starts with the prefix token's text."""
    starts_with_prefix = text.startswith(tokenizer.decode(prefix_token_id(tokenizer)))
    return tokenizer.encode(text, add_special_tokens=False) if starts_with_prefix else tokenizer.encode(text)


def write_task(folder: str | Path, text: str, tokenizer) -> Path:
    """Write the task into `folder` (made if missing; its three files replaced); returns the YAML's path.

    `text`: the test split; `tokenizer`: the variants' Hugging Face tokenizer (counts the document's tokens)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"text": text, "tokens": len(lm_eval_tokens(tokenizer, text))}
    source = resources.files(__package__).joinpath(Path(functions.__file__).name).read_text(encoding="utf-8")
    write_atomic(str(folder / FUNCTIONS_FILE), source, force=True)
    write_atomic(str(folder / functions.DOCUMENTS_FILE), json.dumps(document) + "\n", force=True)
    write_atomic(str(folder / f"{TASK}.yaml"), task_yaml(), force=True)
    return folder / f"{TASK}.yaml"


def read_documents(folder: str | Path) -> list[str]:
    """The texts of the task's documents in `folder`."""
    lines = (Path(folder) / functions.DOCUMENTS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line]


def predict_lm_eval_perplexity(
    model: nn.Module, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 8, dtype: torch.dtype | None = None
) -> Perplexity:
    """lm-eval's token perplexity of `model` on the documents `texts`, computed by bwsk's `score_windows` with lm-eval's
    windows (see the module docstring): exp(total NLL / total tokens), every document token scored once."""
    scores = []
    for text in texts:
        ids = lm_eval_tokens(tokenizer, text)
        if ids:
            stream = torch.tensor([prefix_token_id(tokenizer), *ids], dtype=torch.long)
            scores += score_windows(model, stream, window=max_length + 1, stride=max_length, batch_size=batch_size, dtype=dtype)
    total = sum(score.tokens for score in scores)
    if total == 0:
        raise BwskError("the lm-eval task's documents hold no tokens")
    nll = sum(score.nll for score in scores) / total
    method = f"lm-eval's rolling windows: documents scored separately after the prefix token, disjoint windows of {max_length}"
    return Perplexity(math.exp(nll), nll, total, len(scores), method)


def evaluate_variant(
    folder: str | Path, task_folder: str | Path, *, device: str = "cpu", batch_size: int = 1, max_length: int | None = None
) -> dict[str, Any]:
    """lm-eval's `HFLM` on the variant folder `folder` with the task in `task_folder`, and bwsk's prediction of its
    token perplexity. A reversible variant loads with bwsk's classes (registered here), without remote code.
    `max_length`: lm-eval's window (None: what HFLM reads from the config, as the `lm_eval` command does)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    register()
    lm = HFLM(pretrained=str(folder), device=device, batch_size=batch_size, max_length=max_length)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # lm-eval imports FUNCTIONS_FILE: no __pycache__
    try:  # beside it, so the published folder holds what bwsk wrote and nothing else
        found = simple_evaluate(
            model=lm,
            tasks=[TASK],
            task_manager=TaskManager(include_path=str(task_folder), include_defaults=False),
            bootstrap_iters=0,
            log_samples=False,
        )
    finally:
        sys.dont_write_bytecode = writes_bytecode
    reported = found["results"][TASK]
    predicted = predict_lm_eval_perplexity(lm.model, lm.tokenizer, read_documents(task_folder), max_length=lm.max_length)
    numbers = {name: reported[f"{name},none"] for name in METRICS}
    difference = abs(numbers["token_perplexity"] - predicted.perplexity) / predicted.perplexity
    return {**numbers, "tokens": predicted.tokens, "max_length": lm.max_length, "bwsk_prediction": predicted.perplexity,
            "relative_difference": difference}  # fmt: skip


def evaluate_experiment(out: str | Path, summary: dict[str, Any], spec: RunSpec, *, device: str = "auto") -> dict[str, Any]:
    """Write the task of `spec`'s test split into OUT/lm_eval, evaluate every variant folder of `summary` with lm-eval on
    `device`, and rewrite the card and results.json with the numbers (`summary["lm_eval"]`); returns that section."""
    from lm_eval import __version__ as version
    from transformers import AutoTokenizer

    out = Path(out)
    test = load_text_splits(spec.data, spec.split, dataset_config=spec.dataset_config).test
    variants = [row["variant"] for row in summary["variants"]]
    write_task(out / TASK_FOLDER, test, AutoTokenizer.from_pretrained(str(out / variants[0])))
    chosen = str(resolve_device(device))
    section = {
        "tool": f"lm-eval {version}",
        "task": TASK,
        "task_folder": TASK_FOLDER,
        "windows": "the test split as one document; disjoint windows of max_length tokens, the first token given the prefix token",
        "variants": {name: evaluate_variant(out / name, out / TASK_FOLDER, device=chosen) for name in variants},
    }
    summary["lm_eval"] = section
    write_experiment_outputs(out, summary)
    return section
