"""The reversible architecture as a Hugging Face model type: a saved reversible model loads with the Auto classes.

    bwsk.register()                                        # model_type "bwsk_reversible" (conversion and loading do it too)
    as_pretrained(converted).save_pretrained(folder)       # config.json + model.safetensors
    model = AutoModelForCausalLM.from_pretrained(folder)   # bwsk's own classes (no remote code runs)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)  # without bwsk: the folder's modeling file
    model.generate(ids)
    converted = load_reversible(folder)                    # the converted model itself: to train further (reversible mode)

A folder's `config.json` holds the base model's config (`text_config`, with its own
`model_type`) and the coupling layout the model was trained with (`coupling`: the layer
container, each layer's F and G steps, the stream combination). Loading builds the base
architecture from `text_config` and converts it with `make_reversible` on exactly that
layout (no re-discovery: a later bwsk whose couple pass answers differently still rebuilds
the same function). The weights are the base model's parameters under the prefix `model.`
(a trainer checkpoint stores them without it, as the converted model names them; both load).
A saved folder also carries a self-contained modeling file and `auto_map` naming it (see
`bwsk.training.reversible.remote_code`), and says `use_cache` as the base config's default
(`bwsk.training.kv_cache.cache_on_for_saving`).

Invariant: `from_pretrained(folder)` computes the same logits as the model that was saved.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.initialization import no_init_weights

from bwsk.errors import SourceError, first_line
from bwsk.training.kv_cache import cache_on_for_saving
from bwsk.training.reversible.convert import COMBINATION, RUNTIME_ATTRIBUTE, make_reversible, reversible_runtime
from bwsk.training.reversible.coupling import Step
from bwsk.training.reversible.discover import LayerHalves
from bwsk.training.reversible.errors import ConversionError
from bwsk.training.reversible.remote_code import AUTO_MAP, write_modeling_file

MODEL_TYPE = "bwsk_reversible"
LAYOUT_FORMAT = 1


def layout_to_json(model: nn.Module) -> dict[str, Any]:
    """The coupling layout of a model converted by `make_reversible`, as JSON-ready data."""
    report = reversible_runtime(model).report

    def steps(found: tuple[Step, ...]) -> list[dict[str, Any]]:
        return [{"path": s.path, "keywords": list(s.keywords), **({} if s.dropout is None else {"dropout": s.dropout})} for s in found]

    layers = [
        {"layer": h.layer, "kind": h.kind, "f": steps(h.f), "g": steps(h.g), **({} if h.outputs is None else {"outputs": h.outputs})}
        for h in report.layers
    ]
    return {"format": LAYOUT_FORMAT, "container": report.container, "combination": report.combination, "layers": layers}


def layout_from_json(coupling: dict[str, Any] | None) -> tuple[str, list[LayerHalves]]:
    """(container, halves of each layer) from `layout_to_json`'s data; ConversionError for data this bwsk cannot rebuild."""
    if not isinstance(coupling, dict) or "layers" not in coupling:
        raise ConversionError(f"a {MODEL_TYPE} config needs a 'coupling' layout (written by bwsk when it saved the model)")
    if coupling.get("format") != LAYOUT_FORMAT or coupling.get("combination") != COMBINATION:
        raise ConversionError(
            f"coupling layout format {coupling.get('format')!r} with combination {coupling.get('combination')!r} is not the one this "
            f"bwsk builds (format {LAYOUT_FORMAT}, {COMBINATION!r})"
        )

    def steps(found: list[dict[str, Any]]) -> tuple[Step, ...]:
        return tuple(Step(step["path"], tuple(step["keywords"]), step.get("dropout")) for step in found)

    layers = [
        LayerHalves(layer["layer"], layer["kind"], steps(layer["f"]), steps(layer["g"]), layer.get("outputs"))
        for layer in coupling["layers"]
    ]
    return coupling["container"], layers


class BwskReversibleConfig(PreTrainedConfig):
    """A reversible causal LM: the base model's config (`text_config`) and its coupling layout (`coupling`)."""

    model_type = MODEL_TYPE
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt_neox"),
    }

    text_config: dict | PreTrainedConfig | None = None
    coupling: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))


class BwskReversibleForCausalLM(PreTrainedModel, GenerationMixin):
    """The base architecture of `config.text_config`, converted by `make_reversible` on `config.coupling` (attribute `model`)."""

    config_class = BwskReversibleConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: BwskReversibleConfig, converted: nn.Module | None = None):
        super().__init__(config)
        if converted is None:
            base = AutoModelForCausalLM.from_config(config.text_config)
            converted = make_reversible(base, inplace=True, measure_gap=False, layout=layout_from_json(config.coupling))
        self.model = converted
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.model.get_output_embeddings()

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, plus the folder's modeling file and the `auto_map` naming it (loadable
        without bwsk, with `trust_remote_code`); the configs say `use_cache` as the base config's default."""
        os.makedirs(save_directory, exist_ok=True)
        write_modeling_file(Path(save_directory))
        self.config.auto_map = dict(AUTO_MAP)
        with cache_on_for_saving(self):
            return super().save_pretrained(save_directory, *args, **kwargs)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        """The converted model's forward (its output type: logits, loss with `labels`, past key values)."""
        given = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
        )
        if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            given["logits_to_keep"] = logits_to_keep
        return self.model(**{name: value for name, value in given.items() if value is not None}, **kwargs)


def reversible_config(model: nn.Module) -> BwskReversibleConfig:
    """The `bwsk_reversible` config of a Hugging Face model converted by `make_reversible`: its own config and coupling layout."""
    # a copy: a composite config sets its attention implementation on its sub-configs, which must not reach the live model
    return BwskReversibleConfig(text_config=copy.deepcopy(model.config), coupling=layout_to_json(model))


def saved_config(model: nn.Module) -> PreTrainedConfig | None:
    """The config.json of a folder `model` is saved in: the `bwsk_reversible` config of a reversible Hugging Face model,
    any other model's own config (None when it has none)."""
    if hasattr(model, RUNTIME_ATTRIBUTE) and isinstance(model, PreTrainedModel):
        return reversible_config(model)
    return getattr(model, "config", None)


def as_pretrained(model: nn.Module) -> PreTrainedModel:
    """What to `save_pretrained` for `model`: the Auto-loadable wrapper of a reversible model, any other model itself.

    The wrapper shares `model`'s modules (no copy, no re-initialisation). Modes other than
    reversible change no parameter, buffer or config, so their model saves as its own architecture.
    """
    if not hasattr(model, RUNTIME_ATTRIBUTE):
        return model
    if not isinstance(model, PreTrainedModel):
        raise ConversionError(f"{type(model).__name__} is not a Hugging Face model: a reversible copy of it cannot be saved as one")
    register()
    with no_init_weights():
        wrapper = BwskReversibleForCausalLM(reversible_config(model), converted=model)
    wrapper.generation_config = model.generation_config
    return wrapper


def load_reversible(folder: Path) -> nn.Module:
    """The converted model saved in a `bwsk_reversible` folder (`make_reversible`'s form, not the wrapper), in eval mode.

    Weights are read from safetensors only (nothing is unpickled); eager attention and no KV cache, as bwsk's other loaders.
    """
    register()
    try:
        wrapper = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager", use_safetensors=True)
    except Exception as error:  # transformers raises many types for a bad folder; the user gets one line
        raise SourceError(f"{folder}: cannot load the reversible model: {first_line(error)}") from None
    model = wrapper.model
    model.config.use_cache = False
    return model.eval()


def register() -> None:
    """Register `bwsk_reversible` with AutoConfig and AutoModelForCausalLM (idempotent)."""
    AutoConfig.register(MODEL_TYPE, BwskReversibleConfig, exist_ok=True)
    AutoModelForCausalLM.register(BwskReversibleConfig, BwskReversibleForCausalLM, exist_ok=True)
