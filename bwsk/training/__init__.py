"""Training in less memory. The folders are the concepts, in import order (each imports only those below it):

    experiments/   many runs from names (the six-variant grid, seeds) and what they report
    trainer/       one run: config, loop, optimizer step, data, evaluation, checkpoints, the run folder
    distributed    DDP / FSDP2 under torchrun: process group, wrapping, full-state collectives
    modes/         the four training modes (conventional, checkpoint, analyzed, reversible) and their measurement
    reversible/    coupling blocks that rebuild their inputs in backward; converting Hugging Face models
    blocks, kv_cache, language_model   what every layer above reads of a causal LM

The public names below are imported on first use: importing this package (or any config
module under it) imports no pass, no transformers and registers nothing. The reversible model
type registers with the Hugging Face Auto classes on first conversion or load, or on
`bwsk.training.register()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bwsk.lazy import on_first_use

if TYPE_CHECKING:
    from bwsk.training.modes.apply import apply_mode
    from bwsk.training.reversible.convert import make_reversible, plain_autograd, set_kernels
    from bwsk.training.reversible.huggingface import load_reversible, register
    from bwsk.training.trainer.config import TrainConfig
    from bwsk.training.trainer.run import train

__getattr__, __dir__ = on_first_use(
    __name__,
    {
        "make_reversible": "bwsk.training.reversible.convert",
        "plain_autograd": "bwsk.training.reversible.convert",
        "set_kernels": "bwsk.training.reversible.convert",
        "apply_mode": "bwsk.training.modes.apply",
        "load_reversible": "bwsk.training.reversible.huggingface",
        "register": "bwsk.training.reversible.huggingface",
        "TrainConfig": "bwsk.training.trainer.config",
        "train": "bwsk.training.trainer.run",
    },
)

__all__ = ["TrainConfig", "apply_mode", "load_reversible", "make_reversible", "plain_autograd", "register", "set_kernels", "train"]
