"""The model a run starts from: a zoo name (random init: from scratch), a Hugging Face directory or Hub id
(its weights: fine-tune; a directory with only config.json: from scratch), or the folder of an earlier run
(or one of its checkpoints, or its `checkpoints/` folder: the latest one), which is a Hugging Face directory.

A reversible run's folder (model type `bwsk_reversible`) starts as its converted model, in the coupling
layout it was trained with: it trains further in the reversible mode only (`bwsk.training.modes.apply`).
Every start is a causal language model in train mode on the cpu, drawn from `seed` when random.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bwsk.errors import SourceError
from bwsk.frontend import zoo
from bwsk.frontend.hf_files import read_config
from bwsk.frontend.hugging_face import check_directory, isolated_transformers, load_hf_directory, load_hub
from bwsk.frontend.sources import HUB_ID
from bwsk.training.reversible.huggingface import MODEL_TYPE, load_reversible
from bwsk.training.trainer.checkpoint import latest_checkpoint

VOCAB_MULTIPLE = 64


@dataclass
class StartModel:
    """A loaded start: the model, whether its weights are pretrained, and where it came from."""

    model: nn.Module
    pretrained: bool
    source: str


def load_start_model(
    spec: str,
    *,
    vocab_size: int | None = None,
    tiny: bool = False,
    layers: int | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    trust_pickle: bool = False,
) -> StartModel:
    """Load `spec` (see the module docstring). `vocab_size`: a zoo model's vocabulary grows to hold it (rounded up to 64).

    A folder's own code (`auto_map`) runs only with `trust_remote_code`, pickled weights load only with `trust_pickle`.
    """
    path = Path(spec)
    if path.is_dir():
        folder = latest_checkpoint(path) or path
        config = read_config(folder)
        if config.get("model_type") == MODEL_TYPE:
            bwsk_classes = {key: value for key, value in config.items() if key != "auto_map"}  # its modeling file never runs here
            check_directory(folder, bwsk_classes, trust_pickle=False, trust_remote_code=False, device="cpu")  # safetensors only
            with isolated_transformers():
                start = StartModel(load_reversible(folder), True, f"reversible run {folder} ({MODEL_TYPE})")
        else:
            model = load_hf_directory(folder, device="cpu", seed=seed, trust_remote_code=trust_remote_code, trust_pickle=trust_pickle)
            pretrained = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
            start = StartModel(model, pretrained, f"Hugging Face directory {folder}")
    elif path.exists():
        raise SourceError(f"{spec}: a file; MODEL is a zoo name, a Hugging Face directory or Hub id, or an earlier run's folder")
    elif spec in zoo.names():
        start = StartModel(_zoo_model(spec, vocab_size, tiny, layers, seed), False, f"zoo {spec}{' (tiny)' if tiny else ''}, random init")
    elif HUB_ID.fullmatch(spec):
        start = StartModel(load_hub(spec, trust_remote_code=trust_remote_code, trust_pickle=trust_pickle), True, f"Hugging Face Hub {spec}")
    else:
        raise SourceError(f"{spec}: no such folder, zoo model ({', '.join(zoo.causal_lm_names())}) or Hub id (org/name)")
    _require_causal_lm(start.model, spec)
    start.model.train()
    return start


def _zoo_model(name: str, vocab_size: int | None, tiny: bool, layers: int | None, seed: int) -> nn.Module:
    import transformers

    config = zoo.make_config(name, tiny=tiny, layers=layers, device="cpu")
    if vocab_size is not None and getattr(config, "vocab_size", vocab_size) < vocab_size:
        config.vocab_size = -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    model_class = getattr(transformers, zoo.entry(name).model_class, None)
    if model_class is None:
        raise SourceError(f"{name} is not a language model (bwsk-train trains causal language models)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class._from_config(config, attn_implementation="eager")


def _causal_lm_classes() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _require_causal_lm(model: nn.Module, spec: str) -> None:
    if type(model).__name__ not in _causal_lm_classes():
        raise SourceError(f"{spec}: a {type(model).__name__}, not a causal language model (bwsk-train trains next-token prediction)")
