"""Inline the grad-mode and autocast wrappers torch.export leaves in training-level graphs.

`torch.no_grad()` or `torch.autocast(...)` inside a model's forward (Hugging Face
rotary embeddings use them) becomes a higher-order call
`wrap_with_set_grad_enabled(False, submod, *args)` whose body is a subgraph. The
body computes the same values outside the wrapper, so for the IR (which describes
values) inlining it is exact. The ExportedProgram given is never modified.
"""

from __future__ import annotations

import copy
import operator

import torch.fx

WRAPPERS = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast"})


def _is_wrapper(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and getattr(node.target, "__name__", "") in WRAPPERS


def without_wrappers(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`module` itself when it has no wrapper calls, else a copy with every wrapper's body inlined."""
    if not any(_is_wrapper(n) for n in module.graph.nodes):
        return module
    module = copy.deepcopy(module)
    while True:
        wrapper = next((n for n in module.graph.nodes if _is_wrapper(n)), None)
        if wrapper is None:
            return module
        _inline(module, wrapper)


def _inline(module: torch.fx.GraphModule, wrapper: torch.fx.Node) -> None:
    body_node = next(a for a in wrapper.args if isinstance(a, torch.fx.Node) and a.op == "get_attr")
    operands = wrapper.args[wrapper.args.index(body_node) + 1 :]
    body = getattr(module, body_node.target)
    env: dict[torch.fx.Node, object] = {}
    results: tuple = ()
    with module.graph.inserting_before(wrapper):
        placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
        env.update(zip(placeholders, operands, strict=True))
        for node in body.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                results = tuple(node.args[0])
                break
            env[node] = module.graph.node_copy(node, lambda n: env[n])
    values = [env[r] if isinstance(r, torch.fx.Node) else r for r in results]
    for user in list(wrapper.users):
        if user.target is not operator.getitem:
            raise ValueError(f"{wrapper.name} is used by {user.name} other than through getitem")
        user.replace_all_uses_with(values[user.args[1]])
        module.graph.erase_node(user)
    module.graph.erase_node(wrapper)
    if not body_node.users:
        module.graph.erase_node(body_node)
