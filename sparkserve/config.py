"""Frozen configuration tree. Each component takes only its slice; validation in __post_init__."""
from __future__ import annotations

from dataclasses import dataclass, field, fields


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
    """Speculative decoding: which drafter, how many drafts (gamma), how verify lengths are chosen.

    Build it from user JSON (``--speculative-config``, ``LLM(speculative_config=...)``) with
    ``SpecConfig.from_dict``: an unknown key is an error that lists the valid ones. Legacy form: the
    planner/gate/n-gram settings used to sit in an ``"extra": {...}`` object; ``from_dict`` still
    accepts it and flattens it into the fields below (a key given both ways is an error).
    """

    method: str = "none"  # none | dspark | dflash | eagle3 | ngram
    model: str | None = None  # drafter checkpoint directory (all methods but ngram)
    num_speculative_tokens: int = 0  # gamma; 0: the drafter's own (ngram: 4)
    verify: str = "fixed"  # verify-length planner: fixed | threshold | causal | lagged
    confidence_threshold: float = 0.0  # threshold: verify the drafts up to the first c < this
    verify_k: int | None = None  # fixed: verify at most k drafts per request and step (None: all)
    verify_lag: int = 2  # lagged: the budget comes from the confidences of this many steps ago
    cost_profile_time_s: float = 30.0  # causal/lagged: start-up profiling limit when no table is cached
    cost_cache_dir: str | None = None  # cost tables' cache root (None: $SPARKSERVE_CACHE_DIR or ~/.cache/sparkserve)
    drift_ece_bound: float = 0.03  # refit STS temperatures when live ECE exceeds its noise floor by more
    draft_gate: bool = True  # causal/lagged: draft only where drafting measurably pays (spec_decode/draft_gate.py)
    max_ngram: int = 4  # ngram: longest suffix matched
    min_ngram: int = 2  # ngram: shortest suffix matched

    METHODS = ("none", "dspark", "dflash", "eagle3", "ngram")
    VERIFY_MODES = ("fixed", "threshold", "causal", "lagged")
    NGRAM_KEYS = ("max_ngram", "min_ngram")  # only for method "ngram"

    def __post_init__(self) -> None:
        _check_types(self)
        if self.method not in self.METHODS:
            raise ValueError(f"speculative method must be one of {self.METHODS}, got {self.method!r}")
        if self.verify not in self.VERIFY_MODES:
            raise ValueError(f"speculative verify must be one of {self.VERIFY_MODES}, got {self.verify!r}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {self.confidence_threshold}")
        if self.num_speculative_tokens < 0 or self.num_speculative_tokens > 64:
            raise ValueError(f"num_speculative_tokens must be in [0, 64], got {self.num_speculative_tokens}")
        if self.verify_k is not None and self.verify_k < 0:
            raise ValueError(f"verify_k must be >= 0 (or null: all drafts), got {self.verify_k}")
        if self.verify_lag < 1:
            raise ValueError(f"verify_lag must be >= 1 step, got {self.verify_lag}")
        if not 0.0 < self.cost_profile_time_s < float("inf"):
            raise ValueError(f"cost_profile_time_s must be positive and finite, got {self.cost_profile_time_s}")
        if not 0.0 <= self.drift_ece_bound <= 1.0:
            raise ValueError(f"drift_ece_bound must be in [0, 1], got {self.drift_ece_bound}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram ({self.min_ngram}) <= max_ngram ({self.max_ngram})")

    @classmethod
    def from_dict(cls, data: dict) -> "SpecConfig":
        """The config a user's JSON object names. ValueError for an unknown key (the message lists the
        valid ones), an n-gram key with another method, or a legacy ``extra`` key given twice."""
        if not isinstance(data, dict):
            raise ValueError(f"the speculative config must be a JSON object, got {type(data).__name__}")
        flat = {k: v for k, v in data.items() if k != "extra"}
        legacy = data.get("extra") or {}
        if not isinstance(legacy, dict):
            raise ValueError(f'speculative "extra" must be an object, got {legacy!r}')
        twice = sorted(set(flat) & set(legacy))
        if twice:
            raise ValueError(f"speculative key(s) {twice} given both flat and inside \"extra\"")
        flat.update(legacy)
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(flat) - set(valid))
        if unknown:
            raise ValueError(f"unknown speculative config key(s) {unknown}; valid keys: {valid}")
        ngram = sorted(set(flat) & set(cls.NGRAM_KEYS))
        if ngram and flat.get("method", "none") != "ngram":
            raise ValueError(f"speculative key(s) {ngram} apply to method 'ngram' only")
        return cls(**flat)

    @property
    def enabled(self) -> bool:
        return self.method != "none" and self.num_speculative_tokens > 0


def _check_types(config) -> None:
    """Each field holds its annotated type (JSON gives ints for floats: accepted; bools never count as numbers)."""
    kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
    for f in fields(config):
        value, allowed = getattr(config, f.name), str(f.type).replace(" ", "").split("|")
        if value is None and "None" in allowed:
            continue
        types = tuple(t for a in allowed for t in kinds.get(a, ()))
        if not isinstance(value, types) or (isinstance(value, bool) and "bool" not in allowed):
            raise ValueError(f"speculative {f.name} must be {' or '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Where the target model lives and how to run it."""

    model: str
    tokenizer: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    attention_backend: str = "auto"  # auto | torch | cpu (attention/registry.py lists what exists)
    seed: int = 0
    served_model_name: str | None = None
    num_threads: int | None = None  # CPU threads for torch; None: 1 for small models, else torch's default
    enforce_eager: bool = False  # True: run the modules, never the captured step (models/native_stack.py)
    tensor_parallel_size: int = 1  # ranks the model is split over (sparkserve/distributed/); 1: no torch.distributed

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    spec: SpecConfig = field(default_factory=SpecConfig)
