"""Measured memory (MemTracker bytes, exact on the CPU) against hand counts and against the analysis's predictions."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from bwsk.frontend.zoo import build, model_inputs
from bwsk.training.modes.apply import analyze_model, applied_mode, apply_mode, predicted_activation_bytes
from bwsk.training.modes.measure import activation_bytes, max_grad_difference, step_memory

pytestmark = pytest.mark.slow  # whole-model steps and subprocesses: `make test` runs them, `make test-fast` leaves them out

MEASURED = ("conventional", "checkpoint", "analyzed", "reversible")  # every mode, one analysis per depth


def test_activation_bytes_counts_what_the_graph_keeps():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    x = torch.randn(4, 8)
    # the linear keeps its input (a clone of x, made inside the tracker), relu keeps its output
    assert activation_bytes(model, x) == 4 * 8 * 4 + 4 * 16 * 4
    with torch.no_grad():
        assert activation_bytes(model, x) == 0


def test_step_memory_counts_parameters_gradients_and_adamw_state():
    model = torch.nn.Sequential(torch.nn.Embedding(32, 8), torch.nn.Linear(8, 32))
    ids = torch.randint(0, 32, (2, 6))
    optimizer = torch.optim.AdamW(model.parameters())
    measured = step_memory(model, optimizer, ids)
    parameter_bytes = sum(p.numel() * 4 for p in model.parameters())
    tensors = len(list(model.parameters()))
    categories = measured.peak_by_category
    assert categories["Parameter"] == parameter_bytes
    assert categories["Gradient"] == parameter_bytes  # the peak is in the optimizer step: every gradient is alive
    # exp_avg, exp_avg_sq and a step count per tensor, plus the step's own temporaries
    assert categories["Optstate"] >= 2 * parameter_bytes + 4 * tensors
    assert measured.peak_bytes == categories["Total"] >= 4 * parameter_bytes
    assert measured.source == "MemTracker"


def test_max_grad_difference_is_relative_and_flags_missing_gradients():
    reference = {"w": torch.tensor([2.0, -4.0])}
    assert max_grad_difference({"w": torch.tensor([2.0, -4.0])}, reference) == 0.0
    assert max_grad_difference({"w": torch.tensor([3.0, -4.0])}, reference) == pytest.approx(0.25)
    assert max_grad_difference({}, reference) == float("inf")


@functools.cache
def measured(layers: int) -> dict[str, tuple[int, int]]:
    """Per mode: (measured activation bytes, predicted activation bytes) on a tiny Pythia, batch 1 x 32."""
    model = build("pythia-70m", tiny=True, layers=layers, device="cpu")
    (ids,) = model_inputs(model, batch=1, seq=32)
    analysis = analyze_model(model, (ids,))
    found = {}
    for mode in MEASURED:
        applied = apply_mode(copy.deepcopy(model), mode, example_input=(ids,))
        kept = activation_bytes(applied, ids)
        assert activation_bytes(applied, ids) == kept  # repeatable to the byte
        found[mode] = (kept, predicted_activation_bytes(analysis, mode, applied_mode(applied).plan))
    return found


def test_recomputing_modes_keep_fewer_activation_bytes_than_conventional():
    found = measured(4)
    assert found["checkpoint"][0] < found["analyzed"][0] < found["conventional"][0]


@pytest.mark.parametrize("mode", MEASURED)
def test_predicted_activation_bytes_agree_with_measured(mode):
    kept, predicted = measured(4)[mode]
    assert abs(predicted - kept) <= 0.1 * kept


@pytest.mark.sweep
def test_reversible_activation_bytes_stay_flat_in_depth_and_predicted():
    found = {layers: measured(layers) for layers in (4, 8, 16)}
    reversible = {layers: found[layers]["reversible"][0] for layers in found}
    conventional = {layers: found[layers]["conventional"][0] for layers in found}
    assert reversible[16] <= 1.1 * reversible[4]
    assert 3.5 <= conventional[16] / conventional[4] <= 4.1
    for layers in (8, 16):
        assert reversible[layers] < found[layers]["checkpoint"][0]
    for layers in found:
        kept, predicted = found[layers]["reversible"]
        assert abs(predicted - kept) <= 0.1 * kept, (layers, kept, predicted)
