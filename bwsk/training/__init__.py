"""Training in less memory: the reversible runtime, the four training modes, the trainer.

Importing this package registers the reversible architecture with the Hugging Face Auto
classes (model type `bwsk_reversible`, see `bwsk.training.hf_reversible`), so a saved
reversible model loads with `AutoModelForCausalLM.from_pretrained(folder)`.
"""

from bwsk.training.hf_reversible import register as _register_reversible_model_type

_register_reversible_model_type()
