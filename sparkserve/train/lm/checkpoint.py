"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a directory `step_{N:08d}/` holding
- `model.safetensors`     fp32 parameters (tied weights stored once),
- `optimizer.safetensors` AdamW moments and step counts keyed by parameter name, plus the torch RNG,
- `state.json`            step, optimizer param groups, LR scheduler state, data position, extras.
It is written under a temporary name and renamed into place, so a killed run never leaves a
half-written checkpoint that looks complete; the newest complete one is the resume point.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

PREFIX = "step_"


def _param_names(model: torch.nn.Module) -> dict[int, str]:
    """id(param) -> first name under which named_parameters() lists it."""
    return {id(p): name for name, p in model.named_parameters()}


def save_checkpoint(ckpt_dir: str, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, data_state: dict, extra: dict | None = None, keep: int = 2) -> str:
    os.makedirs(ckpt_dir, exist_ok=True)
    final = os.path.join(ckpt_dir, f"{PREFIX}{step:08d}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_model(model, os.path.join(tmp, "model.safetensors"))

    names = _param_names(model)
    opt_state = optimizer.state_dict()
    index_to_name = {}
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(flat):
        index_to_name[i] = names[id(p)]
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    for i, st in opt_state["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{index_to_name[i]}.{key}"] = t.detach().clone().contiguous()
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))

    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in opt_state["param_groups"]]
    sched = scheduler.state_dict()  # LambdaLR: plain numbers (a function lambda is stored as None)
    state = {"step": step, "param_groups": groups, "param_names": [index_to_name[i] for i in range(len(flat))],
             "scheduler": sched, "data": data_state, "extra": extra or {}}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: str) -> list[str]:
    """Complete checkpoints, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    names = sorted(n for n in os.listdir(ckpt_dir) if n.startswith(PREFIX) and not n.endswith(".tmp"))
    return [os.path.join(ckpt_dir, n) for n in names if os.path.exists(os.path.join(ckpt_dir, n, "state.json"))]


def latest_checkpoint(ckpt_dir: str) -> str | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load_checkpoint(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG in place; return state.json (step, data, extra)."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    missing, unexpected = load_model(model, os.path.join(path, "model.safetensors"))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
    tensors = load_file(os.path.join(path, "optimizer.safetensors"))
    name_to_index = {n: i for i, n in enumerate(state["param_names"])}
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        name, _, field = key[len("state."):].rpartition(".")
        opt_state.setdefault(name_to_index[name], {})[field] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in state["param_groups"]]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    return state
