"""Byte-level BPE tokenizer for the demo model, trained on the corpus's train split.

Qwen-style: the Qwen2/3 pre-tokenizer regex (digits split one by one, which helps a small model do
arithmetic), byte-level alphabet (every string round-trips, no unknown tokens, no normalizer), and
ChatML special tokens. Written as `tokenizer.json` + `tokenizer_config.json` so both
`tokenizers.Tokenizer.from_file` and `transformers.AutoTokenizer.from_pretrained` load it.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

ENDOFTEXT, IM_START, IM_END, MASK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, MASK)  # ids 0..3, in this order

# The pre-tokenization pattern of Qwen2/Qwen3's tokenizer.json.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML, as Qwen2.5/Qwen3 render a conversation without tools or thinking blocks.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render_prompt(user_text: str) -> str:
    """The chat template applied to one user turn with add_generation_prompt=True."""
    return f"{IM_START}user\n{user_text}{IM_END}\n{IM_START}assistant\n"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE; special tokens take ids 0..3. Deterministic for a given text sequence."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_config(model_max_length: int) -> dict:
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END, MASK],
        "bos_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "mask_token": MASK,
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": model_max_length,
        "split_special_tokens": False,
    }


def save_tokenizer(tok: Tokenizer, out_dir: str, model_max_length: int) -> None:
    """Write tokenizer.json (canonical, sorted-key JSON) and tokenizer_config.json into `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    raw = json.loads(tok.to_str())
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(raw, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(model_max_length), f, ensure_ascii=False, indent=2)
        f.write("\n")


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
