"""Small random-weight Qwen3/Llama checkpoints written by transformers' save_pretrained."""
from __future__ import annotations

import torch


def make_hf_model(path: str, arch: str = "qwen3", tied: bool = False, seed: int = 0, vocab: int = 256,
                  layers: int = 2, hidden: int = 64) -> str:
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=tied, rms_norm_eps=1e-6, eos_token_id=1, bos_token_id=None)
    if arch == "qwen3":
        cfg = transformers.Qwen3Config(head_dim=hidden // 4, **common)
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger-than-default weights so logits are not all ~equal
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.save_pretrained(path, safe_serialization=True)
    return path
