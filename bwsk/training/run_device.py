"""Where a run computes: one device (`resolve_device`), or one process of a torchrun job (`join_process_group`).

Under `config.distributed` each process takes the device `setup_distributed` gives it: the GPU
of its local rank with nccl, or the cpu with gloo when `--device cpu` is asked for. A run that
is not distributed refuses to start as several processes (each would train alone into the same folder).
"""

from __future__ import annotations

import os
import time

import torch

from bwsk.errors import BwskError
from bwsk.training.config import TrainConfig
from bwsk.training.distributed import DistInfo, setup_distributed


def resolve_device(name: str) -> torch.device:
    """ "auto": CUDA when available, else the cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BwskError(f"unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BwskError(f"--device {name}: no CUDA device on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BwskError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device


def join_process_group(config: TrainConfig) -> DistInfo | None:
    """The process group of a distributed run; None for a run of one process."""
    if config.distributed is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1:
            raise BwskError(
                f"started as {processes} processes but not distributed: each would train alone into the same folder "
                "(pass --distributed ddp or fsdp)"
            )
        return None
    if config.device != "auto":
        resolve_device(config.device)
    return setup_distributed("gloo" if config.device == "cpu" else None)


def synchronized_time(device: torch.device) -> float:
    """`time.perf_counter()` once the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def describe_device(device: torch.device, info: DistInfo | None, strategy: str | None) -> str:
    """The device in words for results, e.g. "2 x cpu (1 threads), fsdp over gloo"."""
    one = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return one if info is None else f"{info.world_size} x {one}, {strategy} over {info.backend}"
