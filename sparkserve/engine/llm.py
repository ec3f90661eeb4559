"""Offline batch API, mirroring vLLM's ``LLM``: ``LLM(model).generate(prompts, params)``."""
from __future__ import annotations

from sparkserve.engine.args import build_engine_config
from sparkserve.engine.engine import Engine
from sparkserve.outputs import RequestOutput
from sparkserve.sampling_params import SamplingParams


class LLM:
    """Generate for a batch of prompts with continuous batching; returns outputs in input order."""

    def __init__(self, model: str | None = None, **kwargs):
        kwargs.setdefault("max_waiting", 1 << 30)  # offline batches are not admission-controlled
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
