"""Data-parallel training cases: tiny models in every mode, a few AdamW steps; run under torchrun or in one process.

Under `torchrun --nproc-per-node 2 -m training.distributed_cases OUT` every rank trains each
(family, mode, strategy) on its half of each global batch; rank 0 writes the final weights
(OUT/tensors.safetensors, keys `family/mode/strategy/name`), each step's loss (mean over
ranks) and gradient norm, and the parameter elements each rank stores (OUT/records.json).
Then one case per strategy is resumed: after 2 steps the full weights and optimizer state go
to rank 0 (`resumed/...`, `moments/...`), a fresh wrapped model loads them and takes step 3. `train_reference` runs the same case in one process on the whole batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from training.tiny_models import tiny_model

from bwsk.training.distributed import (
    STRATEGIES,
    all_reduce_mean,
    full_model_state,
    full_optimizer_state,
    gather_per_rank,
    load_full_model_state,
    load_full_optimizer_state,
    local_tensors,
    setup_distributed,
    shutdown_distributed,
    wrap_model,
)
from bwsk.training.language_model import lm_loss, logits_of
from bwsk.training.modes import MODES
from bwsk.training.modes.apply import apply_mode

FAMILIES = ("neox-parallel", "llama")
STEPS = 3
GLOBAL_BATCH = 4
SEQ = 12
LR = 1e-3
EPS = 1e-6  # see test_distributed: keeps Adam from normalising rounding noise into updates
MAX_NORM = 1.0
RESUMED_FAMILY, RESUMED_MODE = "llama", "reversible"


def global_batches() -> list[torch.Tensor]:
    """The global batch of each step (fixed token ids)."""
    generator = torch.Generator().manual_seed(1234)
    return [torch.randint(128, (GLOBAL_BATCH, SEQ), generator=generator) for _ in range(STEPS)]


def fresh_model(family: str) -> torch.nn.Module:
    """The case's model before any mode (same weights in every process: seeded)."""
    model = tiny_model(family, layers=2, hidden=32, seed=0)
    model.config.use_cache = False
    return model.train()


def in_mode(family: str, mode: str) -> torch.nn.Module:
    return apply_mode(fresh_model(family), mode, example_input=(global_batches()[0],))


def make_optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=LR, eps=EPS, weight_decay=0.1)


def train_steps(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[torch.Tensor], reduce=float
) -> dict[str, list[float]]:
    """AdamW steps with gradient clipping (as the trainer does): each step's loss (through `reduce`) and gradient norm before clipping."""
    record: dict[str, list[float]] = {"losses": [], "norms": []}
    for ids in batches:
        loss = lm_loss(logits_of(model(ids)), ids)
        loss.backward()
        record["losses"].append(reduce(loss.item()))
        record["norms"].append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return record


def train_reference(family: str, mode: str, steps: int = STEPS) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    """One process, whole global batches: the model and optimizer after `steps` steps, and the steps' record."""
    model = in_mode(family, mode)
    optimizer = make_optimizer(model)
    return model, optimizer, train_steps(model, optimizer, global_batches()[:steps])


def main(out: Path) -> None:
    info = setup_distributed()
    local = [batch[info.rank :: info.world_size] for batch in global_batches()]
    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, dict] = {}

    def wrapped(family: str, mode: str, strategy: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = wrap_model(in_mode(family, mode), strategy, info)
        return model, make_optimizer(model)

    def keep(prefix: str, state: dict[str, torch.Tensor]) -> None:
        tensors.update({f"{prefix}/{name}": tensor.clone() for name, tensor in state.items()})  # full states may alias live tensors

    for family in FAMILIES:
        for mode in MODES:
            for strategy in STRATEGIES:
                model, optimizer = wrapped(family, mode, strategy)
                case = f"{family}/{mode}/{strategy}"
                records[case] = train_steps(model, optimizer, local, reduce=lambda value: all_reduce_mean(value, info))
                stored = sum(tensor.numel() for tensor in local_tensors(model.parameters()))
                records[case]["stored_parameters"] = gather_per_rank(stored)
                keep(case, full_model_state(model))
    for strategy in STRATEGIES:  # resume: 2 steps, full state to rank 0, a fresh wrapped model loads it, the last step
        model, optimizer = wrapped(RESUMED_FAMILY, RESUMED_MODE, strategy)
        train_steps(model, optimizer, local[:2])
        weights, moments = full_model_state(model), full_optimizer_state(model, optimizer)
        if info.is_main:
            keep(
                f"moments/{strategy}",
                {f"{index}.{name}": value for index, values in moments["state"].items() for name, value in values.items()},
            )
            records[f"moments/{strategy}"] = [group["params"] for group in moments["param_groups"]]
        model, optimizer = wrapped(RESUMED_FAMILY, RESUMED_MODE, strategy)
        load_full_model_state(model, weights)
        load_full_optimizer_state(model, optimizer, moments)
        train_steps(model, optimizer, local[2:])
        keep(f"resumed/{strategy}", full_model_state(model))
    if info.is_main:
        save_file(tensors, str(out / "tensors.safetensors"))
        (out / "records.json").write_text(json.dumps(records))
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
