"""Offline batch API, mirroring vLLM's ``LLM``: ``LLM(model).generate(prompts, params)``."""
from __future__ import annotations

from sparkserve.engine.args import build_engine_config
from sparkserve.engine.engine import Engine
from sparkserve.engine.wire import RequestDelta
from sparkserve.outputs import CompletionOutput, Logprob, RequestOutput, SpecDecodeStats
from sparkserve.sampling_params import SamplingParams


class OutputAccumulator:
    """Folds an engine's per-step deltas into whole ``RequestOutput``s, once: each delta costs work
    in proportion to its new tokens, and a request's text is joined when it finishes."""

    def __init__(self):
        self._prompts: dict[str, tuple[str | None, list[int]]] = {}
        self._open: dict[str, dict[int, tuple[CompletionOutput, list[str]]]] = {}  # id -> index -> (out, text parts)

    def expect(self, request_id: str, prompt: str | None, prompt_token_ids: list[int]) -> None:
        """Record a request's prompt for its output (requests never announced get an empty one)."""
        self._prompts[request_id] = (prompt, prompt_token_ids)

    def update(self, deltas: list[RequestDelta]) -> list[RequestOutput]:
        """Fold in one step's deltas; returns the outputs of the requests that finished."""
        done = []
        for delta in deltas:
            seqs = self._open.setdefault(delta.request_id, {})
            for s in delta.seqs:
                if s.index not in seqs:
                    out = CompletionOutput(s.index, "", [], logprobs=None if s.new_logprobs is None else [],
                                           num_prompt_tokens=delta.num_prompt_tokens)
                    seqs[s.index] = (out, [])
                out, parts = seqs[s.index]
                out.token_ids.extend(s.new_token_ids)
                parts.append(s.new_text)
                if s.new_logprobs and out.logprobs is not None:
                    out.logprobs.extend(Logprob(t, lp, top) for t, lp, top in s.new_logprobs)
                if s.finish_reason is not None:
                    out.finish_reason, out.stop_reason = s.finish_reason, s.stop_reason
            if delta.finished:
                done.append(self._finish(delta))
        return done

    def _finish(self, delta: RequestDelta) -> RequestOutput:
        outs = []
        for _, (out, parts) in sorted(self._open.pop(delta.request_id).items()):
            out.text = "".join(parts)
            outs.append(out)
        prompt, prompt_ids = self._prompts.pop(delta.request_id, (None, []))
        return RequestOutput(delta.request_id, prompt, prompt_ids, outs, True, delta.num_cached_tokens,
                             delta.spec_decode or SpecDecodeStats())


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
        acc = OutputAccumulator()
        ids = []
        for prompt, sp in zip(prompts, params_list):
            text, prompt_ids = self.engine.encode_prompt(prompt)
            ids.append(self.engine.add_request(None, {"prompt_token_ids": prompt_ids, "prompt": text}, sp))
            acc.expect(ids[-1], text, prompt_ids)
        return self._run(ids, acc)

    def chat(self, messages, sampling_params: SamplingParams | list[SamplingParams] | None = None,
             chat_template_kwargs: dict | None = None, use_tqdm: bool = False) -> list[RequestOutput]:
        """``messages``: one conversation (list of {"role", "content"}) or a list of them."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, **(chat_template_kwargs or {}))
                   for c in convs]
        return self.generate(prompts, sampling_params)

    def _run(self, ids: list[str], acc: OutputAccumulator) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        pending = set(ids)
        while pending:
            for out in acc.update(self.engine.step()):
                if out.request_id in pending:
                    done[out.request_id] = out
                    pending.discard(out.request_id)
            if pending and not self.engine.has_unfinished():
                raise RuntimeError(f"engine idle with unfinished requests {sorted(pending)[:3]}")
        return [done[i] for i in ids]
