"""Drafter weights in and out of training, and the data-parallel plumbing.

- ``initial_drafter_dir``: ``--init DIR`` or a fresh DeepSpec-layout random drafter written by
  ``init_drafter`` (so the config a trained drafter ships with is exactly what serving parses).
- ``load_trainable``: the serving model class (``DSparkDraftModel`` / ``Eagle3DraftModel``) in fp32
  with its ``embed_tokens``/``lm_head`` re-copied from the target and frozen (DSPARK.md §1.6).
- ``export``: ``config.json`` + ``model.safetensors`` in the DeepSpec layout ``load_drafter`` reads.
- ``Parallel``: rank/world from torchrun's environment, gloo on CPU and NCCL on GPU; sum
  all-reduces of gradients and loss normalisers.
"""
from __future__ import annotations

import json
import os
import shutil

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from sparkserve.models.loader import read_state_dict
from sparkserve.spec_decode.checkpoint import check_against_target, read_draft_config
from sparkserve.spec_decode.drafters.dspark import DSparkDraftModel
from sparkserve.spec_decode.drafters.eagle3 import Eagle3DraftModel
from sparkserve.tools.init_drafter import init_drafter

FROZEN = ("embed_tokens.weight", "lm_head.weight")


class Parallel:
    def __init__(self, device: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (identity on one process)."""
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.sum_(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def initial_drafter_dir(method: str, target_dir: str, out_dir: str, init: str | None, *, block_size: int,
                        seed: int, markov_head_type: str, markov_rank: int | None, num_layers: int | None,
                        mask_token_id: int | None, target_layer_ids: list[int] | None, is_main: bool) -> str:
    """Where the starting weights live; rank 0 writes ``OUT/init`` on a fresh run."""
    if init is not None:
        return init
    path = os.path.join(out_dir, "init")
    if not is_main:
        return path
    if mask_token_id is None:
        mask_token_id = default_mask_token(target_dir)
    kwargs = dict(num_speculative_tokens=block_size, seed=seed, markov_head_type=markov_head_type,
                  markov_rank=markov_rank, num_layers=num_layers, target_layer_ids=target_layer_ids,
                  mask_token_id=mask_token_id)
    record = {"method": method, "target": os.path.abspath(target_dir), **kwargs}
    args_file = os.path.join(path, "init_args.json")
    if os.path.exists(args_file):
        with open(args_file) as f:
            saved = json.load(f)
        if saved != record:
            raise ValueError(f"{path} was initialised with {saved}, not {record}: use a fresh --out")
        return path
    init_drafter(method, target_dir, path + ".tmp", **kwargs)
    with open(os.path.join(path + ".tmp", "init_args.json"), "w") as f:
        json.dump(record, f, indent=1)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(path + ".tmp", path)
    return path


def default_mask_token(target_dir: str) -> int | None:
    """The tokenizer's ``<|mask|>`` when it has one (the demo tokenizer does), else init_drafter's rule."""
    if not os.path.exists(os.path.join(target_dir, "tokenizer.json")):
        return None
    from sparkserve.models.tokenizer import Tokenizer

    return Tokenizer(target_dir).token_to_id("<|mask|>")


def load_trainable(path: str, method: str, target) -> torch.nn.Module:
    """The drafter at ``path`` as a trainable fp32 module on the target's device (frozen vocab copies)."""
    state = read_state_dict(path)
    dcfg = read_draft_config(path, set(state), method)
    if dcfg.kind == "zlab-dflash":
        raise ValueError(f"{path}: z-lab DFlash checkpoints have no embed_tokens/lm_head; train the DeepSpec "
                         "DFlash layout (--method dflash without --init, or a Qwen3DSparkModel checkpoint)")
    check_against_target(dcfg, target.config, path)
    model = (Eagle3DraftModel if dcfg.kind == "eagle3" else DSparkDraftModel)(dcfg)
    if "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    with torch.no_grad():
        model.embed_tokens.weight.copy_(target.model.embed_tokens.weight.float())
        model.lm_head.weight.copy_(target.lm_head.weight.float())
    model = model.to(next(target.parameters()).device)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in FROZEN)
    return model


def export(model: torch.nn.Module, config_dir: str, out_dir: str, dtype: torch.dtype = torch.bfloat16) -> str:
    """Write ``out_dir/config.json`` (the initial drafter's) + ``out_dir/model.safetensors``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(config_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    if "dtype" in cfg:
        cfg["dtype"] = cfg["torch_dtype"]
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    tmp = os.path.join(out_dir, "model.safetensors.tmp")
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    return out_dir
