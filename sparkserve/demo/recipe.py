"""The two demo recipes: FULL (the shipped model) and QUICK (a minutes-long smoke run for CI).

A recipe fixes everything that determines the result besides the seed; the build writes it into
`manifest.json` and refuses to resume a directory built with a different one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from sparkserve.demo.corpus import CorpusSize


@dataclass(frozen=True)
class ModelShape:
    """Qwen3 hyper-parameters chosen by the recipe (the rest are DecoderConfig defaults)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class Recipe:
    name: str
    corpus: CorpusSize
    vocab_size: int
    model: ModelShape
    seq_len: int  # training row length (tokens per row, excluding the shifted target)
    batch_size: int
    max_steps: int
    lr: float
    warmup_steps: int
    init_std: float = 0.02
    num_eval_prompts: int = 200  # per domain, written as demo-{domain}.jsonl
    num_ppl_docs: int = 300  # per domain, for held-out perplexity
    num_accuracy_prompts: int = 100  # math prompts decoded greedily for exact-answer accuracy

    def to_json(self) -> dict:
        return asdict(self)

    def with_steps(self, max_steps: int) -> "Recipe":
        return replace(self, max_steps=max_steps)


# ~6.6M parameters (2.1M of them the tied 8192x256 embedding), 13 MB in bf16. Niced on 2 CPU cores
# shared with other engineers' test runs it trained at 100-500 tokens/s, and 1-1.7k on an idle machine;
# 4000 steps x 4 x 512 = 8.2M tokens (2 epochs of the corpus) take about 2 hours. The model has the
# answer format after ~1M tokens but only starts copying names from the prompt after ~3M (the loss
# drops from ~1.7 to ~1.4 around step 950): don't cut the budget much below this.
FULL = Recipe(
    name="full",
    corpus=CorpusSize(num_math=30_000, max_code=None, max_chat=None),
    vocab_size=8192,
    model=ModelShape(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8,
                     num_key_value_heads=2, head_dim=32, max_position_embeddings=2048),
    seq_len=512,
    batch_size=4,
    max_steps=4000,
    lr=2e-3,
    warmup_steps=50,
)

QUICK = Recipe(
    name="quick",
    corpus=CorpusSize(num_math=400, max_code=100, max_chat=100),
    vocab_size=1024,
    model=ModelShape(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, max_position_embeddings=512),
    seq_len=256,
    batch_size=4,
    max_steps=30,
    lr=3e-3,
    warmup_steps=5,
    num_eval_prompts=20,
    num_ppl_docs=10,
    num_accuracy_prompts=2,
)
