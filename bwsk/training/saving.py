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

import torch
from torch import nn

from bwsk.frontend.hugging_face import isolated_transformers
from bwsk.training.checkpoint import save_weights, write_tensors
from bwsk.training.hf_reversible import MODEL_TYPE
from bwsk.training.modes import is_reversible


def save_model(model: nn.Module, folder: Path, *, tokenizer=None, weights: dict[str, torch.Tensor] | None = None) -> str:
    """Write `model` (and the `tokenizers.Tokenizer`, if given) into `folder`; returns what was saved, in words.

    `weights`: the model's whole state dict, to write instead of the model's own tensors (an FSDP2 model
    holds only its shard; rank 0 passes the gathered state and alone calls this).
    """
    staging = folder / f".tmp-model-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with isolated_transformers():
            described = _write(model, staging, tokenizer, weights)
        for item in staging.iterdir():
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return described


def _write(model: nn.Module, folder: Path, tokenizer, weights: dict[str, torch.Tensor] | None) -> str:
    if tokenizer is not None:
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(str(folder))
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(str(folder), state_dict=weights)  # a reversible model writes its own type (`SaveAsReversible`)
        return f"{MODEL_TYPE if is_reversible(model) else type(model).__name__} via save_pretrained (safetensors)"
    if weights is not None:
        write_tensors(weights, folder / "model.safetensors")
    else:
        save_weights(model, folder / "model.safetensors")
    return f"{type(model).__name__} weights (safetensors; no config: not a Hugging Face model)"
