"""From what the user has (an export archive, a Hugging Face model, a zoo name, a module) to a Program.

The only package that touches torch.export, torch.fx or transformers.
"""

from bwsk.frontend.compile import Compiled, compile_source, load, lower, lower_module
from bwsk.frontend.faithfulness import Faithfulness, faithfulness

__all__ = ["Compiled", "Faithfulness", "compile_source", "faithfulness", "load", "lower", "lower_module"]
