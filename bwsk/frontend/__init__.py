"""From what the user has (an export archive, a Hugging Face model, a zoo name, a module) to a Program.

The only package that touches torch.export, torch.fx or transformers. Its public names are imported
on first use, so `bwsk.frontend.zoo` (the table of zoo models) loads without torch. (`faithfulness`, the
function, is imported from its module `bwsk.frontend.faithfulness`, whose name it shares.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bwsk.lazy import on_first_use

if TYPE_CHECKING:
    from bwsk.frontend.compile import Compiled, compile_source, load, lower, lower_module
    from bwsk.frontend.faithfulness import Faithfulness

__getattr__, __dir__ = on_first_use(
    __name__,
    {
        "Compiled": "bwsk.frontend.compile",
        "compile_source": "bwsk.frontend.compile",
        "load": "bwsk.frontend.compile",
        "lower": "bwsk.frontend.compile",
        "lower_module": "bwsk.frontend.compile",
        "Faithfulness": "bwsk.frontend.faithfulness",
    },
)

__all__ = ["Compiled", "Faithfulness", "compile_source", "load", "lower", "lower_module"]
