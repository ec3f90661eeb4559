"""Writing the trained demo model as a Hugging Face model directory, plus its evaluation prompt sets.

Layout: config.json, model.safetensors (bf16, HF key names, tied head omitted),
generation_config.json, tokenizer.json, tokenizer_config.json, demo-{math,code,chat}.jsonl and
demo_report.json (recipe and held-out metrics).
"""

from __future__ import annotations

import json
import os
import random
import shutil

import torch

from sparkserve.demo.corpus import DOMAINS
from sparkserve.demo.corpus_types import Example
from sparkserve.demo.tokenizer_build import ENDOFTEXT, IM_END, MASK
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.loader import save_model

EXPORT_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "demo-math.jsonl", "demo-code.jsonl", "demo-chat.jsonl",
                "demo_report.json")


def generation_config(special_ids: dict[str, int]) -> dict:
    """Qwen3's recommended non-thinking sampling settings; generation stops at <|im_end|>."""
    return {
        "bos_token_id": None,
        "eos_token_id": [special_ids[IM_END], special_ids[ENDOFTEXT]],
        "pad_token_id": special_ids[ENDOFTEXT],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "max_new_tokens": 512,
    }


def write_prompt_sets(test: list[Example], out_dir: str, num_per_domain: int, seed: int) -> dict[str, int]:
    """demo-{domain}.jsonl: a seeded sample (kept in corpus order) of the test split, one
    `{"turns": [user text], "reference": ...}` per line. Returns the count per domain."""
    counts = {}
    for domain in DOMAINS:
        pool = [ex for ex in test if ex.domain == domain]
        rng = random.Random(f"demo-prompts-{domain}-{seed}")
        chosen = sorted(rng.sample(range(len(pool)), min(num_per_domain, len(pool))))
        with open(os.path.join(out_dir, f"demo-{domain}.jsonl"), "w", encoding="utf-8") as f:
            for i in chosen:
                f.write(json.dumps({"turns": [pool[i].prompt], "reference": pool[i].reference},
                                   ensure_ascii=False) + "\n")
        counts[domain] = len(chosen)
    return counts


def export_model(model: torch.nn.Module, cfg: DecoderConfig, tokenizer_dir: str, special_ids: dict[str, int],
                 out_dir: str) -> None:
    """config.json + model.safetensors (bf16) + generation_config.json + tokenizer files."""
    os.makedirs(out_dir, exist_ok=True)
    cfg.bos_token_id = None
    cfg.eos_token_id = special_ids[IM_END]
    cfg.pad_token_id = special_ids[ENDOFTEXT]
    cfg.extra.update({"attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
                      "mask_token_id": special_ids[MASK]})
    save_model(model, cfg, out_dir, dtype=torch.bfloat16)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(generation_config(special_ids), f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))


def copy_export(src_dir: str, dst_dir: str) -> None:
    """Replace the exported files in `dst_dir` (other files there, e.g. drafters, are left alone)."""
    os.makedirs(dst_dir, exist_ok=True)
    for name in EXPORT_FILES:
        src = os.path.join(src_dir, name)
        if os.path.exists(src):
            tmp = os.path.join(dst_dir, f".{name}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, os.path.join(dst_dir, name))
