"""The tensor-parallel process group: NCCL on GPUs, gloo on CPUs, rendezvous through a TCPStore on
127.0.0.1 (all ranks on one machine, started by rank 0), and a timeout on every collective so a rank
waiting on a dead peer fails instead of hanging."""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 120.0  # a collective waits at most this long for the other ranks


def collective_timeout_s() -> float:
    """``SPARKSERVE_TP_TIMEOUT_S`` or the default."""
    return float(os.environ.get("SPARKSERVE_TP_TIMEOUT_S", DEFAULT_TIMEOUT_S))


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, rank: int) -> torch.device:
    """Rank r's device: cuda:r on GPUs (rank 0 is the engine's cuda:0), the CPU otherwise."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", rank)


def open_store(world: int, port: int = 0) -> dist.TCPStore:
    """Rank 0 (port 0: a free port, read back from ``store.port``) or a worker (rank 0's port)."""
    timeout = datetime.timedelta(seconds=collective_timeout_s())
    return dist.TCPStore("127.0.0.1", port, world, is_master=port == 0, timeout=timeout, wait_for_workers=False)


def init_group(store: dist.TCPStore, rank: int, world: int, device: torch.device) -> None:
    """Join the default process group (one tensor-parallel group per process)."""
    if dist.is_initialized():
        raise RuntimeError("this process already belongs to a torch.distributed group: one tensor-parallel "
                           "engine per process")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=collective_timeout_s()))


def close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
