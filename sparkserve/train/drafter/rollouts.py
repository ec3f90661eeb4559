"""Per-verify-round records from the engine, for calibration and evaluation.

The engine reports counters per request; calibration and the cond@k metric need every round: how
many drafts were verified (l), how many were accepted (a), and the drafter's raw confidence logits
for the block that was verified. ``RoundRecorder`` gets them without touching the engine: it wraps
this ``LLM``'s runner ``execute`` (plan + result = l and a per sequence) and its proposer's
``propose`` (with a forward hook on the confidence head, which sees the logits before any STS
temperature is applied). Verification in a step uses the block proposed in an earlier step, so
blocks are matched by request id across steps.

Fixed verify length: the scheduler's verify planner is switched off (every pending draft, up to the
drafter's gamma, is verified), as in the paper's Table 1 and DeepSpec's evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Round:
    request_id: str
    verified: int  # l
    accepted: int  # a
    emitted: int  # tokens the round added: a + 1, or a when an accepted draft was a stop token
    conf_logits: list[float] | None  # raw z_0..z_{g-1} of the verified block


class RoundRecorder:
    def __init__(self, llm):
        engine = llm.engine
        self.engine, self.runner = engine, engine.runner
        self.proposer = self.runner.proposer
        if self.proposer is None:
            raise ValueError("the engine has no drafter; pass a speculative_config")
        engine.scheduler.verify_planner = None  # fixed verify length
        self.rounds: list[Round] = []
        self._latest: dict[str, list[float]] = {}  # request id -> logits of its newest block
        self._fresh: dict[str, list[float]] = {}
        self._calls: list[torch.Tensor] = []
        self._install()

    def _install(self) -> None:
        propose, execute = self.proposer.propose, self.runner.execute
        head = getattr(getattr(self.proposer, "model", None), "confidence_head", None)
        if head is not None:
            head.register_forward_hook(lambda _m, _i, out: self._calls.append(out.detach().float().cpu()))

        def wrapped_propose(requests):
            self._calls = []
            blocks = propose(requests)
            if self._calls:
                z = torch.stack(self._calls, dim=1)  # [R, n]
                for r, req in enumerate(requests):
                    self._fresh[req.request_id] = z[r].tolist()
            return blocks

        eos = set(self.engine.eos_token_ids)

        def wrapped_execute(plan):
            result = execute(plan)
            for seq, res in zip(plan.seqs, result.seqs):
                if seq.sample and seq.num_draft_tokens:
                    verified, accepted = seq.num_draft_tokens, res.num_accepted_drafts
                    stop = next((i for i, t in enumerate(res.new_token_ids[:accepted]) if t in eos), None)
                    if stop is not None:  # DeepSpec: the round ends at the stop token, no +1
                        verified = accepted = emitted = stop + 1
                    else:
                        emitted = accepted + 1
                    self.rounds.append(Round(seq.request_id, verified, accepted, emitted,
                                             self._latest.get(seq.request_id)))
            self._latest.update(self._fresh)
            self._fresh = {}
            return result

        self.proposer.propose = wrapped_propose
        self.runner.execute = wrapped_execute

    def take(self) -> list[Round]:
        out, self.rounds = self.rounds, []
        return out


def round_tensors(rounds: list[Round]):
    """(verified [R], accepted [R], emitted [R]) over rounds with l >= 1."""
    return tuple(torch.tensor([getattr(r, f) for r in rounds], dtype=torch.long)
                 for f in ("verified", "accepted", "emitted"))


def confidence_tensors(rounds: list[Round], gamma: int):
    """The rounds that carry confidence logits: (verified [R'], accepted [R'], logits [R', gamma] fp64),
    or None when there are none (drafters without a confidence head)."""
    rounds = [r for r in rounds if r.conf_logits is not None]
    if not rounds:
        return None
    verified, accepted, _ = round_tensors(rounds)
    logits = torch.tensor([(r.conf_logits + [0.0] * gamma)[:gamma] for r in rounds], dtype=torch.float64)
    return verified, accepted, logits


def chat_prompt_ids(tokenizer, turns: list[str]) -> list[int]:
    """The first user turn through the chat template (thinking off), as the engine would encode it."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": turns[0]}], add_generation_prompt=True,
                                         enable_thinking=False)
    return tokenizer.encode(text, add_special_tokens=True)


def run_prompts(llm, recorder: RoundRecorder, prompt_ids: list[list[int]], temperature: float, max_tokens: int,
                seed: int = 0, top_p: float = 1.0, top_k: int = 0) -> tuple[list[Round], list]:
    """Generate for every prompt (seeded per prompt) and return (the rounds it produced, the outputs)."""
    from sparkserve import SamplingParams

    limit = llm.engine.config.scheduler.max_model_len
    keep = [p for p in prompt_ids if len(p) < limit - 1]
    params = [SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed + i,
                             max_tokens=min(max_tokens, limit - len(p))) for i, p in enumerate(keep)]
    recorder.take()
    outs = llm.generate([{"prompt_token_ids": p} for p in keep], params) if keep else []
    return recorder.take(), outs
