"""Hugging Face models from a local directory or the Hub, without ever running the model's own code unasked.

A directory whose config has an `auto_map` ships Python files that transformers would import
(after asking on stdin). Unless the caller passes `trust_remote_code=True`, such a directory is
refused before transformers sees it (the config and weight files checked are those transformers
reads: `bwsk.frontend.hf_files`), and every transformers call is made with
`trust_remote_code` spelled out. While transformers runs, standard input is empty, standard
output is discarded, and its logging, warnings and progress bars are silenced: errors reach
the user as exceptions, reported in one line by the caller.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bwsk.errors import SourceError, first_line
from bwsk.frontend.hf_files import read_config, weight_files
from bwsk.frontend.size_limits import check_model_size

REMOTE_CODE_HINT = "read its Python files, then pass --trust-remote-code (trust_remote_code=True) if you trust them"
# auto_map keys for model classes, most specific first.
AUTO_MODEL_KEYS = ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM", "AutoModel")


def load_hf_directory(
    path: str | Path, *, trust_pickle: bool = False, trust_remote_code: bool = False, device: str = "meta", seed: int = 0
) -> nn.Module:
    """A transformers model (eval mode, eager attention, no KV cache) from a directory with config.json.

    The class is the config's first `architectures` entry known to transformers (else the bare
    AutoModel class; with `trust_remote_code`, the class its `auto_map` names). Weights are loaded on
    cpu from the files transformers picks (`bwsk.frontend.hf_files`); without weight files the model is
    randomly initialised from `seed` on `device`. Pickled weights are refused unless `trust_pickle`.
    """
    path = Path(path)
    raw_config = read_config(path)
    files = check_directory(path, raw_config, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code, device=device)
    stray = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))  # weights transformers would not find: its error
    import transformers

    with isolated_transformers():
        try:
            config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except Exception as error:
            raise SourceError(f"{path / 'config.json'}: unreadable config: {first_line(error)}") from None
        model_class = architecture_class(config, remote=trust_remote_code and "auto_map" in raw_config)
        name = getattr(model_class, "__name__", "model")
        try:
            if files or stray:
                safe = all(file.name.endswith(".safetensors") for file in files)
                model = model_class.from_pretrained(
                    path, config=config, attn_implementation="eager", use_safetensors=safe, trust_remote_code=trust_remote_code
                )
            else:
                with torch.random.fork_rng(devices=[]), torch.device(device):
                    torch.manual_seed(seed)
                    model = _from_config(model_class, config, trust_remote_code)
        except Exception as error:
            raise SourceError(f"{path}: cannot build {name}: {first_line(error)}") from None
    model.config.use_cache = False
    return model.eval()


def check_directory(path: Path, config: dict[str, Any], *, trust_pickle: bool, trust_remote_code: bool, device: str) -> list[Path]:
    """Refuse `path` (whose config transformers builds from is `config`) before transformers reads it: its own code
    without `trust_remote_code`, an absurd size, pickled or outside weights; returns the weight files transformers reads."""
    if "auto_map" in config and not trust_remote_code:
        raise SourceError(f"{path}: the model needs its own Python code (its config has an auto_map)", hint=REMOTE_CODE_HINT)
    files = weight_files(path, config, trust_pickle=trust_pickle)
    check_model_size(config, str(path), device="cpu" if files else device)  # before transformers builds its config
    return files


def load_hub(model_id: str, *, trust_pickle: bool = False, trust_remote_code: bool = False) -> nn.Module:
    """A transformers model fetched from the Hugging Face Hub (needs the network or a warm cache).

    Without a cached config and with the Hub unreachable, it fails at once instead of after transformers' retries.
    """
    import transformers

    if not hub_reachable() and not _cached(model_id):
        raise SourceError(
            f"{model_id!r}: no such local path, and the Hugging Face Hub is unreachable (no network) with nothing cached for it",
            hint="pass a local directory, a .pt2 file or a zoo name",
        )

    with isolated_transformers():
        try:
            config = transformers.AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            remote = trust_remote_code and bool(getattr(config, "auto_map", None))
            model = architecture_class(config, remote=remote).from_pretrained(
                model_id,
                attn_implementation="eager",
                use_safetensors=None if trust_pickle else True,
                trust_remote_code=trust_remote_code,
            )
        except SourceError:
            raise
        except Exception as error:
            raise SourceError(
                f"cannot fetch {model_id!r} from the Hugging Face Hub: {first_line(error)}",
                hint="no network, no such model, or it needs --trust-remote-code; pass a local directory, a .pt2 file or a zoo name instead",
            ) from None
    model.config.use_cache = False
    return model.eval()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub's endpoint (HF_ENDPOINT) opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection(
            (endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80)), timeout=timeout
        ).close()
    except OSError:
        return False
    return True


def _cached(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # an id the cache layout cannot hold (e.g. invalid characters) is not cached
        return False


def architecture_class(config: Any, *, remote: bool = False) -> Any:
    """The model class: the `auto_map` Auto class when `remote`, else the first `architectures` entry transformers knows."""
    import transformers

    if remote:
        for key in AUTO_MODEL_KEYS:
            if key in config.auto_map:
                return getattr(transformers, key)
    for name in config.architectures or ():
        found = getattr(transformers, name, None)
        if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
            return found
    try:
        return transformers.MODEL_MAPPING[type(config)]
    except KeyError:
        raise SourceError(f"transformers has no model class for architectures {config.architectures} ({config.model_type})") from None


def _from_config(model_class: Any, config: Any, trust_remote_code: bool) -> nn.Module:
    if hasattr(model_class, "_from_config"):
        return model_class._from_config(config, attn_implementation="eager")
    return model_class.from_config(config, attn_implementation="eager", trust_remote_code=trust_remote_code)


@contextlib.contextmanager
def isolated_transformers() -> Iterator[None]:
    """Run transformers with an empty stdin, a discarded stdout and its logging, warnings and progress bars silenced."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    stdin = sys.stdin
    transformers_logging.set_verbosity(logging.CRITICAL + 1)
    transformers_logging.disable_progress_bar()
    hub_logger.setLevel(logging.CRITICAL + 1)
    sys.stdin = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdin = stdin
        hub_logger.setLevel(hub_level)
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
