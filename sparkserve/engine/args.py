"""User-facing keyword arguments -> the frozen EngineConfig (torch-free: the API server uses it)."""
from __future__ import annotations

from sparkserve.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig, SpecConfig


def build_engine_config(model: str | None = None, *, tokenizer: str | None = None, dtype: str = "auto",
                        device: str = "auto", seed: int = 0, max_model_len: int | None = None,
                        max_num_seqs: int = 64, max_num_batched_tokens: int = 2048, block_size: int = 16,
                        num_kv_blocks: int | None = None, kv_cache_memory_bytes: int = 512 << 20,
                        enable_prefix_caching: bool = True, enable_chunked_prefill: bool = True,
                        attention_backend: str = "auto", speculative_config: dict | SpecConfig | None = None,
                        served_model_name: str | None = None, max_waiting: int = 1024,
                        num_threads: int | None = None, enforce_eager: bool = False,
                        tensor_parallel_size: int = 1) -> EngineConfig:
    """One place that turns user-facing keyword arguments into the frozen config tree."""
    if model is None:
        from sparkserve.assets import demo_model_path

        model = demo_model_path()
    if max_model_len is None:
        from sparkserve.models.hf_config import DecoderConfig

        max_model_len = min(DecoderConfig.from_file(model).max_position_embeddings, 4096)
    if tensor_parallel_size > 1:  # sizes that do not divide are refused here, before any process starts
        from sparkserve.distributed.sizes import check_tensor_parallel
        from sparkserve.models.hf_config import DecoderConfig

        check_tensor_parallel(DecoderConfig.from_file(model), tensor_parallel_size)
    spec = speculative_config if isinstance(speculative_config, SpecConfig) else \
        SpecConfig.from_dict(speculative_config or {})
    return EngineConfig(
        model=ModelConfig(model, tokenizer, dtype, device, attention_backend, seed, served_model_name, num_threads,
                          enforce_eager, tensor_parallel_size),
        cache=CacheConfig(block_size, num_kv_blocks, kv_cache_memory_bytes, enable_prefix_caching),
        scheduler=SchedulerConfig(max_num_seqs, max(max_num_batched_tokens, 1), max_model_len,
                                  enable_chunked_prefill, max_waiting),
        spec=spec,
    )
