"""Ranks 1..N-1: load the shard, then run every forward rank 0 announces, until told to stop.

Control and data travel apart. Each step rank 0 sends a small message on the worker's pipe (the step's
token ids, positions and paged-attention inputs, from which the worker builds its own attention metadata
with its own backend); the tensors that must agree bit for bit (hidden rows for the logits, the
all-reduces, the logits gather) go through the process group. A worker waits on its pipe without a
timeout, so an idle server never trips the collectives' timeout; the pipe's EOF means rank 0 is gone, and
the worker exits.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

import torch
import torch.distributed as dist

from sparkserve.attention.base import PagedAttentionContext
from sparkserve.attention.registry import get_backend
from sparkserve.distributed.group import close_group, init_group, open_store
from sparkserve.distributed.shard import shard_for_tensor_parallel
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.loader import DTYPES, load_model, resolve_dtype
from sparkserve.runner.kv_cache import allocate_kv_caches

log = logging.getLogger("sparkserve.distributed")


def load_shard(model_config, rank: int, world: int, device: torch.device, keep_full_head: bool = False):
    """(rank's shard on ``device``, full DecoderConfig, full lm_head weight or None). The checkpoint is read
    on the host at the dtype the device runs, sliced, and only the shard moves to the device."""
    cfg = DecoderConfig.from_file(model_config.model)
    dtype_name = {v: k for k, v in DTYPES.items()}[resolve_dtype(model_config.dtype, cfg, device)]
    model, cfg = load_model(model_config.model, dtype_name, "cpu")
    full_head = model.lm_head.weight.detach().to(device) if keep_full_head else None
    shard = shard_for_tensor_parallel(model, rank, world).to(device)
    return shard, cfg, full_head


def _exit_with_parent(parent_pid: int) -> None:
    """Belt and braces beside the pipe's EOF: leave when rank 0's process is gone, even mid-collective."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="tp-parent-watch", daemon=True).start()


def worker_main(rank: int, world: int, model_config, device: torch.device, port: int, num_threads: int,
                conn, parent_pid: int) -> None:
    """The worker process's entry point (``multiprocessing`` spawn target)."""
    logging.basicConfig(level=logging.WARNING, format=f"[tp rank {rank}] %(levelname)s %(message)s")
    _exit_with_parent(parent_pid)
    try:
        if device.type == "cpu":
            torch.set_num_threads(num_threads)
        torch.manual_seed(model_config.seed)
        conn.send(("hello", None))
        init_group(open_store(world, port), rank, world, device)
        model, _, _ = load_shard(model_config, rank, world, device)
        model.fuse_for_inference(bf16_when_exact=model_config.dtype == "auto")
        backend = get_backend(model_config.attention_backend, device.type)
    except Exception as e:  # reported to rank 0, which raises it as the engine's start-up error
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    try:
        _serve(model, backend, device, conn)
    except (EOFError, OSError):
        pass  # rank 0 is gone
    except Exception as e:  # a failed collective (a peer died, or the timeout): rank 0 reports it
        print(f"[tp rank {rank}] step failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    close_group()


@torch.inference_mode()
def _serve(model, backend, device: torch.device, conn) -> None:
    cfg = model.config  # the rank's: its share of heads and KV heads
    dtype = next(model.parameters()).dtype
    kv_caches = None
    while True:
        msg = conn.recv()
        if msg[0] == "forward":
            _, input_ids, positions, paged, (num_blocks, block_size) = msg
            if kv_caches is None:  # the engine sizes the cache after load: the first step carries its shape
                kv_caches = allocate_kv_caches(cfg.num_hidden_layers, num_blocks, block_size, cfg.num_key_value_heads,
                                               cfg.head_dim, dtype, device)
            ctx = PagedAttentionContext(backend, backend.build_metadata(paged, device), kv_caches, model.scale)
            model(torch.tensor(input_ids, dtype=torch.long, device=device),
                  torch.tensor(positions, dtype=torch.long, device=device), ctx)
        elif msg[0] == "logits":
            rows = torch.empty(msg[1], dtype=msg[2], device=device)
            dist.broadcast(rows, src=0)
            model.lm_head(rows)
        elif msg[0] == "stop":
            return
        else:
            raise ValueError(f"unknown tensor-parallel message {msg[0]!r}")
