"""Optimizer step in backward: each parameter is stepped, and its gradient freed, as soon as that gradient is final.

    in_backward = OptimizerInBackward(model, optimizer)  # optimizer: the run's AdamW, never stepped itself
    with in_backward.step_scope():                       # around the forward and the backward of one training step
        loss = ...
        norm = in_backward.backward(loss)                # the global gradient norm (measured, not clipped)

The ordinary loop holds every gradient until `optimizer.step()`. Here a hook on each parameter
(`Tensor.register_post_accumulate_grad_hook`) runs that parameter's own optimizer (one per parameter,
torchtune's `optimizer_in_bwd` idea) the moment autograd has accumulated its gradient, then sets `.grad`
to None, so the gradients never all coexist. With reversible blocks the stack hands each half's
parameter gradients to `.grad` as the rebuild reaches them (`ReversibleStack.grads_into_leaves`, the
accumulating path FSDP2 uses), so the blocks are stepped one by one during the rebuild; a fused seam's
norm weights (Triton seams) still arrive at the end of their segment.

Invariants:
  - the weights after any number of steps equal the ordinary loop's with `grad_clip` 0: each per-parameter optimizer
    takes its group's settings from `optimizer.param_groups` when it steps (the schedule's current lr, betas, eps,
    weight decay) and keeps its moments in `optimizer.state`;
  - so `optimizer` stays the optimizer of record: `state_dict()`, `load_state_dict()` and `param_groups` are AdamW's own,
    and checkpoints are the ordinary loop's (a run resumes across the two either way);
  - each parameter receives its gradient once per backward; a second arrival (a gradient in two parts, e.g. a parameter
    shared between reversible halves) is a one-line BwskError rather than a second step;
  - global-norm clipping is refused, not emulated (`TrainConfig`): it scales every gradient by a norm known only once
    all exist, exactly what this avoids. The norm is still measured, per parameter as it is stepped, and combined as
    `clip_grad_norm_` does; a non-finite norm is known only after the backward, when the parameters have already moved
    (the ordinary loop stops before its step; either way the run stops without results);
  - hooks exist only inside `backward`: registered after the forward, so a MemTracker's own gradient hooks (installed
    during the forward) see each gradient before it is freed, and removed after, so any other backward through the
    model accumulates `.grad` as usual.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bwsk.errors import BwskError


class OptimizerInBackward:
    """Per-parameter steppers for `optimizer`'s parameters, run by gradient hooks during `backward` (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        from bwsk.training.reversible.convert import RUNTIME_ATTRIBUTE

        self.optimizer = optimizer
        self.names = {id(p): name for name, p in model.named_parameters()}
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.index = {id(p): i for i, p in enumerate(self.parameters)}
        self.group_of = [g for g, group in enumerate(optimizer.param_groups) for _ in group["params"]]
        self.steppers = [
            type(optimizer)([{**_settings(optimizer.param_groups[g]), "params": [p]}]) for g, p in zip(self.group_of, self.parameters)
        ]
        self.stack = getattr(getattr(model, RUNTIME_ATTRIBUTE, None), "stack", None)
        self._norms: dict[int, torch.Tensor] = {}

    @contextlib.contextmanager
    def step_scope(self) -> Iterator[None]:
        """While active (one step's forward and backward), a reversible stack hands its gradients to `.grad` block by block."""
        if self.stack is None:
            yield
            return
        self.stack.grads_into_leaves = True
        try:
            yield
        finally:
            self.stack.grads_into_leaves = False

    def backward(self, loss: torch.Tensor) -> float:
        """`loss.backward()`, stepping each parameter as its gradient arrives and freeing it; the global 2-norm of the gradients."""
        self._norms = {}
        handles = [p.register_post_accumulate_grad_hook(self._step) for p in self.parameters]
        try:
            with warnings.catch_warnings():  # a MemTracker's hook reads `.grad` where autograd calls it with nothing arrived
                warnings.filterwarnings("ignore", message="Expected a tensor or a traceable wrapper-subclass", category=UserWarning)
                loss.backward()
        finally:
            for handle in handles:
                handle.remove()
        norms = [self._norms[i] for i in sorted(self._norms)]  # the parameter order clip_grad_norm_ combines them in
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0

    def _step(self, parameter: torch.Tensor) -> None:
        """The post-accumulate hook: step `parameter` alone with its group's settings of now, then free its gradient.

        Autograd also calls it where nothing arrived (a Function that returned None for the parameter, having
        accumulated its gradient itself, as the reversible rebuild does): `.grad` is None then, and nothing is stepped.
        """
        if parameter.grad is None:
            return
        i = self.index[id(parameter)]
        if i in self._norms:
            raise BwskError(
                f"parameter {self.names.get(id(parameter), i)} received its gradient in two parts in one backward "
                "(shared between blocks?); --optimizer-in-backward steps each parameter once: train without it"
            )
        self._norms[i] = torch.linalg.vector_norm(parameter.grad.detach())
        stepper = self.steppers[i]
        stepper.param_groups[0].update(_settings(self.optimizer.param_groups[self.group_of[i]]))
        stepper.state = self.optimizer.state  # the table of record (`load_state_dict` replaces it)
        stepper.step()
        parameter.grad = None


def _settings(group: dict[str, Any]) -> dict[str, Any]:
    """A parameter group's hyperparameters (everything but its parameters)."""
    return {key: value for key, value in group.items() if key != "params"}
