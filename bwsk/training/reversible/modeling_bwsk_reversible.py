"""A reversible causal LM saved by bwsk, loadable with stock transformers: `trust_remote_code=True`, no bwsk needed.

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    model.generate(ids)                  # with a KV cache, as any causal LM

bwsk writes this file, unchanged, into every folder it saves a reversible model in
(`bwsk.training.reversible.remote_code`); it imports only torch and transformers. Without
`trust_remote_code`, such a folder loads only where bwsk is installed and registered
(`import bwsk; bwsk.register()`): the model type `bwsk_reversible` is bwsk's.

`config.json` holds the base model's config (`text_config`) and the coupling layout the
model was trained with (`coupling`): the layer container and, per layer, the sub-modules
of its halves F and G, with the side inputs each receives. The model is the base
architecture (attribute `model`, its weights under the prefix `model.`) whose layer stack
runs as coupling blocks y1 = x1 + F(x2), y2 = x2 + G(y1). Both streams start at the
embedding output h0, in float64 (float32 on MPS); each half runs in the model's dtype on
its stream and its output is added in the stream dtype; the final norm reads
y1 + y2 - h0, cast back to h0's dtype. Every layer's call records its own side inputs
(mask, rotary embedding, KV cache, ...) and passes the hidden state through; the last
layer's call runs the blocks, each with its own layer's side inputs.

Training with this file works, with ordinary autograd: every activation is stored, so it
has none of bwsk's memory saving (rebuilding the inputs in backward); for that, train
with bwsk (load without remote code, reversible mode).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec

LAYOUT_FORMAT = 1
COMBINATION = "y1 + y2 - h0"


class BwskReversibleConfig(PreTrainedConfig):
    """A reversible causal LM: the base model's config (`text_config`) and its coupling layout (`coupling`)."""

    model_type = "bwsk_reversible"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt_neox"),
    }

    text_config: dict | PreTrainedConfig | None = None
    coupling: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))


class Half:
    """F or G of one layer: its steps in order on one stream; a step's tuple output contributes its first element.

    A step is a sub-module called with the side inputs named in its `keywords`, or (with `dropout`) the dropout
    its layer applies in its own code, `dropout(h, p, training=layer.training)`.
    """

    def __init__(self, root: nn.Module, steps: list[dict[str, Any]]):
        self.steps = [(root.get_submodule(step["path"]), tuple(step["keywords"]), step.get("dropout")) for step in steps]

    def __call__(self, stream: torch.Tensor, side: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
        hidden = stream.to(dtype)
        for module, keywords, dropout in self.steps:
            if dropout is not None:
                hidden = nn.functional.dropout(hidden, dropout, module.training)
                continue
            out = module(hidden, **{name: side[name] for name in keywords if name in side})
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden


class CouplingStack:
    """The layers of the container as coupling blocks: layer i's call records its side inputs; the last one runs them all.

    Invariant: the model calls layer 0, 1, ..., n-1 in order, each on the hidden state layer 0 received (the layers
    before the last return it unchanged, as the first element of a tuple for a layer that returns one).
    """

    def __init__(self, root: nn.Module, coupling: dict[str, Any]):
        if coupling.get("format") != LAYOUT_FORMAT or coupling.get("combination") != COMBINATION:
            raise ValueError(
                f"coupling layout format {coupling.get('format')!r} with combination {coupling.get('combination')!r} is not "
                f"the one this file builds (format {LAYOUT_FORMAT}, {COMBINATION!r}): load it with the bwsk that saved it"
            )
        layers = coupling["layers"]
        self.halves = [(Half(root, layer["f"]), Half(root, layer["g"])) for layer in layers]
        self.outputs = [layer.get("outputs") for layer in layers]
        self.names = [layer["layer"] for layer in layers]
        self.hidden: torch.Tensor | None = None
        self.sides: list[dict[str, Any]] = []
        container = root.get_submodule(coupling["container"])
        if len(container) != len(layers):
            raise ValueError(f"{coupling['container']} holds {len(container)} layers, the coupling layout {len(layers)}")
        for index, layer in enumerate(container):
            layer.forward = LayerEntry(layer, index, self)

    def enter(self, index: int, hidden: torch.Tensor, side: dict[str, Any]) -> torch.Tensor | tuple:
        if index == 0:
            self.hidden, self.sides = hidden, []
        if index != len(self.sides) or hidden is not self.hidden:
            self.hidden, self.sides = None, []
            raise RuntimeError(
                f"{self.names[index]} was called out of order or on another hidden state than the first layer's: the reversible "
                "stack runs the layers in order when the last one is called"
            )
        self.sides.append(side)
        out = hidden
        if index == len(self.halves) - 1:
            first, sides = self.hidden, self.sides
            self.hidden, self.sides = None, []
            out = self.run(first, sides)
        length = self.outputs[index]
        return out if length is None else (out, *([None] * (length - 1)))

    def run(self, hidden: torch.Tensor, sides: list[dict[str, Any]]) -> torch.Tensor:
        """y1 + y2 - h0 after every block, in the dtype of `hidden` (h0)."""
        h0 = hidden.to(torch.float32 if hidden.device.type == "mps" else torch.float64)
        x1, x2 = h0, h0
        for (f, g), side in zip(self.halves, sides):
            x1 = x1 + f(x2, side, hidden.dtype)
            x2 = x2 + g(x1, side, hidden.dtype)
        return (x1 + x2 - h0).to(hidden.dtype)


class LayerEntry:
    """Layer `index`'s forward: its call bound to its own signature ((hidden state, side inputs)), handed to the stack."""

    def __init__(self, layer: nn.Module, index: int, stack: CouplingStack):
        self.layer, self.index, self.stack = layer, index, stack
        self.signature = inspect.signature(type(layer).forward)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple:
        bound = self.signature.bind(self.layer, *args, **kwargs)
        names = list(self.signature.parameters)
        side: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if self.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                side.update(value)
            elif name != names[0]:
                side[name] = value
        return self.stack.enter(self.index, side.pop(names[1]), side)


class BwskReversibleForCausalLM(PreTrainedModel, GenerationMixin):
    """The base architecture of `config.text_config` (attribute `model`), its layers run as the coupling blocks of `config.coupling`."""

    config_class = BwskReversibleConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: BwskReversibleConfig):
        super().__init__(config)
        self.model = AutoModelForCausalLM.from_config(config.text_config)
        self.coupling = CouplingStack(self.model, config.coupling or {})
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.model.get_output_embeddings()

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
        """The base model's forward through the coupling blocks (its output type: logits, loss with `labels`, past key values)."""
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
