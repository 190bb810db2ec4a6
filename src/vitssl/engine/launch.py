"""torchrun init and teardown: the process group comes from torchrun's environment variables.

`torchrun --nproc_per_node=N -m vitssl pretrain ...` sets RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT for every process; a plain `vitssl pretrain` sets none of them
and runs as one process with no process group.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from vitssl.engine.logging import log


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_device(name: str) -> str:
    """The device of this process: `auto` / `cuda` become `cuda:LOCAL_RANK` under torchrun."""
    if not launched_by_torchrun():
        return name
    wants_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if wants_cuda:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu" if name == "auto" else name


def init_distributed(device_name: str) -> tuple[str, bool]:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU).

    Returns this process's device name and whether this call created the group (then call
    `teardown_distributed` at the end). Without torchrun it returns `(device_name, False)`.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return device_name, False
    device = local_device(device_name)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    if dist.get_rank() != 0:
        log.setLevel(logging.WARNING)  # one console: rank 0 reports, the others only warn
    return device, True


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
