"""`save_model(model, folder, tokenizer=...)`: a trained model as a Hugging Face folder (safetensors weights, config, tokenizer).

Files are written into a temporary folder beside `folder` and moved in one by one
(each move atomic), so `folder` never holds a half-written file. A model without
`save_pretrained` is saved as `model.safetensors` alone.

Reversible models are written as the `bwsk_reversible` model type (`bwsk.training.hf_reversible`):
the folder loads with `AutoModelForCausalLM` after `import bwsk.training` and computes the
function that was trained.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from bwsk.frontend.hugging_face import isolated_transformers
from bwsk.training.checkpoint import save_weights
from bwsk.training.hf_reversible import as_pretrained


def save_model(model: nn.Module, folder: Path, *, tokenizer=None) -> str:
    """Write `model` (and the `tokenizers.Tokenizer`, if given) into `folder`; returns what was saved, in words."""
    staging = folder / f".tmp-model-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with isolated_transformers():
            described = _write(model, staging, tokenizer)
        for item in staging.iterdir():
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return described


def _write(model: nn.Module, folder: Path, tokenizer) -> str:
    if tokenizer is not None:
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(str(folder))
    if hasattr(model, "save_pretrained"):
        pretrained = as_pretrained(model)
        pretrained.save_pretrained(str(folder))
        return f"{type(pretrained).__name__} via save_pretrained (safetensors)"
    save_weights(model, folder / "model.safetensors")
    return f"{type(model).__name__} weights (safetensors; no config: not a Hugging Face model)"
