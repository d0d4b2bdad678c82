"""The folder's own modeling file: a saved reversible model loads with stock transformers and `trust_remote_code=True`.

Every save of a reversible model (`save_pretrained` of a converted model, `as_pretrained(model).save_pretrained`,
the trainer's `save_model`) writes `modeling_bwsk_reversible.py` beside `config.json`, and the config's `auto_map`
names its classes (the Hugging Face convention for custom architectures). The file is the fixed text of
`bwsk/training/reversible/modeling_bwsk_reversible.py`, written unchanged: nothing of the config or of any user
input is pasted into code; the file reads the coupling layout from `config.json` when it loads. It imports only
torch and transformers, and computes the function bwsk's `bwsk_reversible` model computes (same logits, same
KV-cache generation; training with ordinary autograd, without bwsk's memory saving).

Which classes load a folder:
- bwsk registered in the process (`bwsk.register()`, a conversion, `bwsk.load_reversible`): bwsk's own, with or
  without `trust_remote_code` (transformers prefers registered classes from outside transformers);
- no bwsk registered, `trust_remote_code=True`: the folder's file;
- no bwsk registered, no `trust_remote_code`: transformers refuses ("contains custom code ... pass the argument
  `trust_remote_code=True`"); its message names the folder, not bwsk, but the config's `architectures`
  (`BwskReversibleForCausalLM`) and the file's docstring do.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bwsk.atomic import write_atomic

MODELING_FILE = "modeling_bwsk_reversible.py"
MODELING_MODULE = MODELING_FILE.removesuffix(".py")
AUTO_MAP = {
    "AutoConfig": f"{MODELING_MODULE}.BwskReversibleConfig",
    "AutoModelForCausalLM": f"{MODELING_MODULE}.BwskReversibleForCausalLM",
}


def modeling_source() -> str:
    """The text of the modeling file every reversible folder carries (the same for every model)."""
    return resources.files(__package__).joinpath(MODELING_FILE).read_text(encoding="utf-8")


def write_modeling_file(folder: Path) -> Path:
    """Write the modeling file into `folder` (replacing an earlier one); its path."""
    path = Path(folder) / MODELING_FILE
    write_atomic(str(path), modeling_source(), force=True)
    return path
