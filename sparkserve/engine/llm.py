"""Offline batch API, mirroring vLLM's ``LLM``: ``LLM(model).generate(prompts, params)``."""
from __future__ import annotations

from sparkserve.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig, SpecConfig
from sparkserve.engine.engine import Engine
from sparkserve.outputs import RequestOutput
from sparkserve.sampling_params import SamplingParams


def build_engine_config(model: str | None = None, *, tokenizer: str | None = None, dtype: str = "auto",
                        device: str = "auto", seed: int = 0, max_model_len: int | None = None,
                        max_num_seqs: int = 64, max_num_batched_tokens: int = 2048, block_size: int = 16,
                        num_kv_blocks: int | None = None, kv_cache_memory_bytes: int = 512 << 20,
                        enable_prefix_caching: bool = True, enable_chunked_prefill: bool = True,
                        attention_backend: str = "auto", speculative_config: dict | None = None,
                        served_model_name: str | None = None, max_waiting: int = 1024) -> EngineConfig:
    """One place that turns user-facing keyword arguments into the frozen config tree."""
    if model is None:
        from sparkserve.assets import demo_model_path

        model = demo_model_path()
    if max_model_len is None:
        from sparkserve.models.hf_config import DecoderConfig

        max_model_len = min(DecoderConfig.from_file(model).max_position_embeddings, 4096)
    spec = SpecConfig(**(speculative_config or {})) if not isinstance(speculative_config, SpecConfig) \
        else speculative_config
    return EngineConfig(
        model=ModelConfig(model, tokenizer, dtype, device, attention_backend, seed, served_model_name),
        cache=CacheConfig(block_size, num_kv_blocks, kv_cache_memory_bytes, enable_prefix_caching),
        scheduler=SchedulerConfig(max_num_seqs, max(max_num_batched_tokens, 1), max_model_len,
                                  enable_chunked_prefill, max_waiting),
        spec=spec,
    )


class LLM:
    """Generate for a batch of prompts with continuous batching; returns outputs in input order."""

    def __init__(self, model: str | None = None, **kwargs):
        self.engine = Engine(build_engine_config(model, **kwargs))
        self.tokenizer = self.engine.tokenizer

    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        if isinstance(prompts, (str, dict)) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        ids = [self.engine.add_request(None, p, sp) for p, sp in zip(prompts, params_list)]
        return self._run(ids)

    def chat(self, messages, sampling_params: SamplingParams | list[SamplingParams] | None = None,
             chat_template_kwargs: dict | None = None, use_tqdm: bool = False) -> list[RequestOutput]:
        """``messages``: one conversation (list of {"role", "content"}) or a list of them."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, **(chat_template_kwargs or {}))
                   for c in convs]
        return self.generate(prompts, sampling_params)

    def _run(self, ids: list[str]) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        pending = set(ids)
        while pending:
            for out in self.engine.step():
                if out.finished and out.request_id in pending:
                    done[out.request_id] = out
                    pending.discard(out.request_id)
            if pending and not self.engine.has_unfinished():
                raise RuntimeError(f"engine idle with unfinished requests {sorted(pending)[:3]}")
        return [done[i] for i in ids]
