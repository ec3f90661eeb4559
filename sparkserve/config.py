"""Frozen configuration tree. Each component takes only its slice; validation in __post_init__."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV cache: ``num_blocks`` blocks of ``block_size`` token slots per layer.

    ``num_blocks`` None: sized from ``kv_cache_memory_bytes``.
    """

    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_memory_bytes: int = 1 << 30
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 1, got {self.block_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.kv_cache_memory_bytes < 1:
            raise ValueError("kv_cache_memory_bytes must be positive")


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits: sequences per step, tokens per step, context length."""

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int = 4096
    enable_chunked_prefill: bool = True
    max_waiting: int = 1024  # admission limit (the server answers 429 beyond it)

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "max_waiting"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                "without chunked prefill max_num_batched_tokens must be >= max_model_len "
                f"({self.max_num_batched_tokens} < {self.max_model_len})"
            )


@dataclass(frozen=True)
class SpecConfig:
    """Speculative decoding: which drafter, how many drafts (gamma), how verify lengths are chosen."""

    method: str = "none"  # none | dspark | dflash | eagle3 | ngram
    model: str | None = None
    num_speculative_tokens: int = 0
    verify: str = "fixed"
    confidence_threshold: float = 0.0
    extra: dict = field(default_factory=dict)

    METHODS = ("none", "dspark", "dflash", "eagle3", "ngram")
    VERIFY_MODES = ("fixed", "threshold", "causal", "lagged")
    # engine-level knobs in `extra`; n-gram drafting also takes its own (max_ngram, min_ngram)
    ENGINE_EXTRA = ("cost_profile_time_s", "cost_cache_dir", "verify_k", "verify_lag", "drift_ece_bound", "draft_gate")
    NGRAM_EXTRA = ("max_ngram", "min_ngram")

    def __post_init__(self) -> None:
        if self.method not in self.METHODS:
            raise ValueError(f"speculative method must be one of {self.METHODS}, got {self.method!r}")
        if self.verify not in self.VERIFY_MODES:
            raise ValueError(f"speculative verify must be one of {self.VERIFY_MODES}, got {self.verify!r}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {self.confidence_threshold}")
        if self.num_speculative_tokens < 0 or self.num_speculative_tokens > 64:
            raise ValueError(f"num_speculative_tokens must be in [0, 64], got {self.num_speculative_tokens}")
        allowed = self.ENGINE_EXTRA + (self.NGRAM_EXTRA if self.method == "ngram" else ())
        unknown = sorted(set(self.extra) - set(allowed))
        if unknown:
            raise ValueError(f"unknown speculative extra key(s) {unknown}; allowed for {self.method!r}: {list(allowed)}")
        if not isinstance(self.extra.get("draft_gate", True), bool):
            raise ValueError(f"speculative extra draft_gate must be true or false, got {self.extra['draft_gate']!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none" and self.num_speculative_tokens > 0


@dataclass(frozen=True)
class ModelConfig:
    """Where the target model lives and how to run it."""

    model: str
    tokenizer: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    attention_backend: str = "auto"  # auto | torch | triton | flashinfer
    seed: int = 0
    served_model_name: str | None = None
    num_threads: int | None = None  # CPU threads for torch; None: 1 for small models, else torch's default

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    spec: SpecConfig = field(default_factory=SpecConfig)
