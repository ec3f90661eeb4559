"""Helpers shared by the bench scripts: random-weight models, prompt sets, timing, tables."""
from __future__ import annotations

import json
import os
import time

import torch


def make_random_qwen3(path: str, hidden: int = 512, layers: int = 8, vocab: int = 8192, seed: int = 0) -> str:
    """A ~29M-parameter random Qwen3 (tied embeddings) in HF layout, with sparkserve's own writer."""
    from sparkserve.models.hf_config import DecoderConfig
    from sparkserve.models.loader import save_model
    from sparkserve.models.qwen3 import Qwen3ForCausalLM

    if os.path.exists(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=hidden // 8,
                        max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=0)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    save_model(model, cfg, path, torch.float32)
    return path


def num_params(path: str) -> int:
    from safetensors import safe_open

    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        return sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel")
                   else _prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def load_prompts(name: str, limit: int) -> list[str]:
    """First-turn prompts of a demo or shared eval set (``{"turns": [...]}`` jsonl)."""
    from sparkserve.assets import ASSETS_DIR

    for base in (os.path.join(ASSETS_DIR, "demo"), os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                   "eval_datasets")):
        file = os.path.join(base, f"{name}.jsonl")
        if os.path.exists(file):
            with open(file) as f:
                return [json.loads(line)["turns"][0] for line in f if line.strip()][:limit]
    raise FileNotFoundError(f"no prompt set {name!r}")


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def print_table(headers: list[str], rows: list[list], echo: bool = True) -> str:
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(_fmt(v).ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    text = "\n".join(lines)
    if echo:
        print(text, flush=True)
    return text


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and abs(v) < 1000 else (f"{v:.0f}" if isinstance(v, float) else str(v))
