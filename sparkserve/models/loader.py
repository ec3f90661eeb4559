"""Load and save decoder LMs as Hugging Face safetensors directories (never pickle)."""
from __future__ import annotations

import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.registry import model_class

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def checkpoint_files(path: str) -> list[str]:
    """The safetensors files of a model directory (single file or a sharded index)."""
    if not os.path.isdir(path):
        raise ValueError(f"model path {path!r} is not a directory")
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index} is not a valid safetensors index: {e}") from None
        files = sorted({os.path.join(path, name) for name in weight_map.values()})
    elif os.path.exists(single):
        files = [single]
    else:
        bins = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth"))]
        hint = f" (found {bins}: pickle checkpoints are not loaded; convert them to safetensors)" if bins else ""
        raise ValueError(f"no model.safetensors or model.safetensors.index.json in {path!r}{hint}")
    for f in files:
        if not os.path.exists(f):
            raise ValueError(f"checkpoint shard {f!r} listed in the index is missing")
    return files


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in checkpoint_files(path):
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"cannot read checkpoint {file!r}: {e}") from None
    return {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}


def resolve_dtype(name: str, cfg: DecoderConfig, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32  # CPU kernels are fastest and exact in fp32
    return DTYPES.get(cfg.torch_dtype, torch.bfloat16) if cfg.torch_dtype != "float32" else torch.float32


def load_model(path: str, dtype: str = "auto", device: str | torch.device = "cpu"):
    """Build the registered class for ``path`` and load its weights; clear ValueError on any mismatch."""
    cfg = DecoderConfig.from_file(path)
    cls = model_class(cfg)
    device = torch.device(device)
    with torch.device("meta"):
        model = cls(cfg)
    state = read_state_dict(path)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    expected = {k: v for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path!r} does not match {cfg.architecture}: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"checkpoint {path!r}: {name} has shape {tuple(tensor.shape)}, "
                             f"config implies {tuple(expected[name].shape)}")
    torch_dtype = resolve_dtype(dtype, cfg, device)
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=False, assign=False)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rotary = type(model.rotary)(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta,
                                      cfg.rope_scaling).to(device)
    model = model.to(torch_dtype)
    model.rotary.to(torch.float32)
    return model.eval(), cfg


def save_model(model, cfg: DecoderConfig, path: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """Write config.json + model.safetensors in HF layout (tied head omitted)."""
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()
             if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    cfg.torch_dtype = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}[dtype]
    cfg.save(path)
