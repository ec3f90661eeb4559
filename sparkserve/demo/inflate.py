"""A function-preserving widened copy of a target and its drafters: the memory-bound bench world
(issue #14). ``sparkserve demo inflate --width W --out DIR``.

Every hidden unit, attention head (q and kv alike) and MLP unit is duplicated W times by *tiling*:
a width-n vector v becomes ``[v, v, ..., v]`` (W copies, Wn wide), so the residual stream of the
inflated model is ``tile(x)`` wherever the original's is ``x``. Per tensor (weights [out, in]):

- a dimension that *writes* a widened vector (embedding columns, projection rows, norm weights,
  biases of widened outputs) is tiled; RMSNorm over ``tile(x)`` has the same rms, so a tiled norm
  weight gives ``tile(norm(x))``;
- a dimension that *reads* one (projection columns, lm_head columns) is tiled and divided by W:
  ``(A / W) tile(x)`` sums W equal copies of ``A x / W``;
- heads: tiling the q rows gives head ``w * Hq + h`` = head h, and kv head ``w * Hkv + g`` = kv head g;
  query head ``w * Hq + h`` reads kv head ``(w * Hq + h) // G = w * Hkv + h // G`` (G = Hq / Hkv kept),
  a copy of the original's, so the GQA grouping holds. head_dim, q/k norms and RoPE are unchanged;
  ``o_proj`` reads W copies of every head's output and is divided by W like any reader;
- inputs made of several vectors are tiled per segment: the drafters' ``fc`` reads n target features
  ``[tile(f_1), .., tile(f_n)]``; Eagle3's q/k/v read ``[tile(embed_norm), tile(hidden_norm)]``;
  DSpark's confidence head reads ``[tile(h), W1[prev]]`` and the gated / RNN Markov heads
  ``[tile(h), W1[prev]]`` / ``[state, W1[prev], tile(h)]``: only the h segment widens;
- the Markov rank, its tables ``markov_w1``/``markov_w2`` and every head output (logits, gate, state,
  confidence) are unchanged. lm_head is written untied (it reads, the embedding writes).

W a power of two divides exactly (any W in fp32 to 1 ulp); the inflated sums differ from the original's only
in fp32 rounding order, so greedy outputs agree but for near-ties (bench/inflate_check.py).
"""
from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sparkserve.models.loader import DTYPES, read_state_dict

Segments = list[tuple[int, bool]]  # (size, widened) along one dimension, in order

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "config.json")
_KEEP = ("q_norm.weight", "k_norm.weight", "markov_w1.weight", "markov_w2.weight")
_HEAD_PARTS = ("markov_head.", "confidence_head.")


def tile(t: torch.Tensor, dim: int, segments: Segments, width: int, divide: bool) -> torch.Tensor:
    """Each widened segment of ``t`` along ``dim`` repeated ``width`` times in place (divided by
    ``width`` when the dimension reads a widened vector); the others kept."""
    if sum(size for size, _ in segments) != t.shape[dim]:
        raise ValueError(f"segments {segments} do not cover dimension {dim} of size {t.shape[dim]}")
    parts = []
    for piece, (_, wide) in zip(t.split([s for s, _ in segments], dim), segments):
        if wide:
            piece = torch.cat([piece] * width, dim)
            piece = piece / width if divide else piece
        parts.append(piece)
    return torch.cat(parts, dim)


def whole(size: int) -> Segments:
    return [(size, True)]


def inflate_tensor(key: str, t: torch.Tensor, hidden: int, width: int) -> torch.Tensor:
    """The widened copy of one checkpoint tensor (target or drafter naming); ValueError on an
    unknown key (no silent pass-through of something that may need widening)."""
    t = t.float()
    if key.endswith(_KEEP):
        return t
    if key.endswith("embed_tokens.weight"):  # [V, H] writes h
        return tile(t, 1, whole(hidden), width, divide=False)
    if key.endswith("lm_head.weight"):  # [V, H] reads h
        return tile(t, 1, whole(hidden), width, divide=True)
    if key.startswith(_HEAD_PARTS):  # outputs stay (r, 3r, 1 wide); only the h input segment widens
        if t.dim() == 1:
            return t
        rest = t.shape[1] - hidden
        if key.endswith("joint_proj.weight"):  # [3r, 2r + H]: [state, W1[prev], h]
            return tile(t, 1, [(rest, False), (hidden, True)], width, divide=True)
        if key.endswith(("gate_proj.weight", "proj.weight")):  # [.., H + r]: [h, W1[prev]]
            return tile(t, 1, [(hidden, True), (rest, False)], width, divide=True)
        raise ValueError(f"cannot inflate {key!r}: unknown head tensor")
    if key.endswith(("norm.weight", "_proj.bias")):  # writes a widened vector
        return tile(t, 0, whole(t.shape[0]), width, divide=False)
    if key.endswith(("_proj.weight", "fc.weight")):  # [out, in]: both widen
        multi = key.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "fc.weight"))
        if multi and t.shape[1] % hidden:
            raise ValueError(f"cannot inflate {key!r}: input width {t.shape[1]} is not a multiple of {hidden}")
        ins = [(hidden, True)] * (t.shape[1] // hidden) if multi else whole(t.shape[1])  # n*H: n vectors
        return tile(tile(t, 0, whole(t.shape[0]), width, divide=False), 1, ins, width, divide=True)
    raise ValueError(f"cannot inflate {key!r}: unknown tensor")


def inflate_state(state: dict[str, torch.Tensor], hidden: int, width: int,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: inflate_tensor(k, v, hidden, width).to(dtype).contiguous() for k, v in state.items()}


DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_WIDE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def inflate_config(raw: dict, width: int, dtype: torch.dtype) -> dict:
    """config.json of the widened model: hidden/MLP/head counts times W, head_dim kept, untied."""
    cfg = json.loads(json.dumps(raw))
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    for name in _WIDE_FIELDS:
        cfg[name] = int(cfg[name]) * width
    cfg.update(head_dim=head_dim, tie_word_embeddings=False, torch_dtype=DTYPE_NAMES[dtype])
    if "dtype" in cfg:
        cfg["dtype"] = DTYPE_NAMES[dtype]
    return cfg


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _write(out_dir: str, cfg: dict, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    file = os.path.join(out_dir, "model.safetensors")
    save_file(state, file, metadata={**metadata, "format": "pt"})
    os.chmod(file, 0o644)  # save_file creates it private; the originals are readable
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def _copy_files(src: str, dst: str) -> None:
    """Every plain file of ``src`` but the weights and config (tokenizer, generation config, calibration)."""
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if os.path.isfile(path) and name not in WEIGHT_FILES and not name.endswith(".safetensors"):
            shutil.copy2(path, os.path.join(dst, name))


def _metadata(path: str) -> dict[str, str]:
    file = os.path.join(path, "model.safetensors")
    if not os.path.exists(file):
        return {}
    with safe_open(file, "pt") as f:
        return dict(f.metadata() or {})


def inflate_model(src: str, dst: str, width: int, dtype: torch.dtype = torch.float32) -> dict:
    """Widen one checkpoint directory (a target or a drafter: the tensor names tell them apart);
    returns the written config. A tied target gets an explicit lm_head (tied weights cannot differ)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    raw = _read_json(os.path.join(src, "config.json"))
    state = read_state_dict(src)
    embed = state.get("model.embed_tokens.weight", state.get("embed_tokens.weight"))
    if raw.get("tie_word_embeddings") and embed is not None:
        state.setdefault("lm_head.weight", embed)
    cfg = inflate_config(raw, width, dtype)
    _write(dst, cfg, inflate_state(state, int(raw["hidden_size"]), width, dtype), _metadata(src))
    _copy_files(src, dst)
    return cfg


def drafter_dirs(src: str) -> dict[str, str]:
    """name -> path of every drafter checkpoint under ``src/drafters``."""
    base = os.path.join(src, "drafters")
    if not os.path.isdir(base):
        return {}
    return {name: os.path.join(base, name) for name in sorted(os.listdir(base))
            if os.path.exists(os.path.join(base, name, "config.json"))}


def inflate(src: str, out: str, width: int, dtype: torch.dtype = torch.float32) -> dict:
    """The target at ``src`` and its drafters (``src/drafters/*``) widened into ``out`` (same layout).
    Returns (and writes to ``out/inflation.json``) a report: source, width, sizes."""
    if os.path.realpath(out) == os.path.realpath(src):
        raise ValueError(f"--out {out!r} is the source model directory; pick a new directory")
    target_cfg = inflate_model(src, out, width, dtype)
    drafters = {name: os.path.join(out, "drafters", name) for name in drafter_dirs(src)}
    for name, dst in drafters.items():
        inflate_model(os.path.join(src, "drafters", name), dst, width, dtype)
    report = {"source": os.path.abspath(src), "width": width, "dtype": DTYPE_NAMES[dtype],
              "hidden_size": target_cfg["hidden_size"], "target_params": num_params(out),
              "target_bytes": os.path.getsize(os.path.join(out, "model.safetensors")),
              "drafters": {name: num_params(d) for name, d in drafters.items()}}
    with open(os.path.join(out, "inflation.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def num_params(path: str) -> int:
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        return sum(int(torch.Size(f.get_slice(k).get_shape()).numel()) for k in f.keys())
