"""Small random-weight Qwen3/Llama checkpoints written by transformers' save_pretrained."""
from __future__ import annotations

import torch


def make_hf_model(path: str, arch: str = "qwen3", tied: bool = False, seed: int = 0, vocab: int = 320,
                  layers: int = 2, hidden: int = 64, with_tokenizer: bool = True) -> str:
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
    if with_tokenizer:
        add_tokenizer(path, vocab)
    return path


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def add_tokenizer(path: str, vocab: int) -> None:
    """A byte-level BPE of exactly ``vocab`` entries (specials first), chat template, generation config."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog " * 3, "def add(a, b):\n    return a + b\n",
            "Step 1: 12 + 7 = 19. The answer is \\boxed{19}.", "héllo wörld ✓ 数字"] * 20
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text, trainer)
    assert tok.get_vocab_size() <= vocab, tok.get_vocab_size()
    tok.save(f"{path}/tokenizer.json")
    with open(f"{path}/tokenizer_config.json", "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE,
                   "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512}, f)
    with open(f"{path}/generation_config.json", "w") as f:
        json.dump({"eos_token_id": [tok.token_to_id("<|im_end|>")]}, f)
