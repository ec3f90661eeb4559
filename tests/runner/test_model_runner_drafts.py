"""ModelRunner with a drafter: it keeps each request's q from ``propose`` and verifies a plan's l
drafts against q[:l]; finished requests drop it; the proposer's declared capabilities drive it."""
from types import SimpleNamespace

import pytest
import torch

from sparkserve.models.loader import load_model
from sparkserve.runner import spec_step
from sparkserve.runner.model_runner import ModelRunner
from sparkserve.spec_decode.types import DraftBlock
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan
from tests.models.hf_fixtures import make_hf_model

GAMMA, BLOCK = 3, 4


class ScriptedProposer:
    """Proposes GAMMA fixed drafts with a seeded q; no target features."""

    num_speculative_tokens = GAMMA
    target_layer_ids: tuple[int, ...] = ()
    needs_history = False
    has_confidence = True
    confidence_temperatures = None

    def __init__(self, vocab: int):
        self.vocab = vocab
        self.blocks: list[DraftBlock] = []

    def observe(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        assert features is None  # no target layers declared: the runner captures none

    def propose(self, requests):
        g = torch.Generator().manual_seed(len(self.blocks))
        out = [DraftBlock([11, 12, 13], torch.softmax(torch.randn(GAMMA, self.vocab, generator=g), -1),
                          [0.9, 0.8, 0.7]) for _ in requests]
        self.blocks.extend(out)
        return out


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    model, cfg = load_model(make_hf_model(str(tmp_path_factory.mktemp("t")), "qwen3", tied=True, seed=2), "float32")
    return ModelRunner(model, 16, BLOCK, "torch", 0, ScriptedProposer(cfg.vocab_size), GAMMA)


def test_verify_reads_the_q_prefix_of_the_pending_block(runner, monkeypatch):
    sampled = SamplingMeta(temperature=1.0, seed=3)
    result = runner.execute(StepPlan([ScheduledSeq("a", [5, 6, 7], 0, [1], sampled)]))
    (res,) = result.seqs
    assert res.next_draft_token_ids == [11, 12, 13] and res.next_draft_confidences == [0.9, 0.8, 0.7]
    q = runner.proposer.blocks[-1].probs
    seen = []
    verify = spec_step.verify
    monkeypatch.setattr(spec_step, "verify", lambda logits, inputs: seen.extend(inputs) or verify(logits, inputs))
    anchor = res.new_token_ids[-1]
    plan = StepPlan([ScheduledSeq("a", [anchor, 11, 12], 3, [1, 2], sampled, num_draft_tokens=2,
                                  draft_confidences=[0.9, 0.8])], draft=False)
    result = runner.execute(plan)
    (inp,) = seen
    assert inp.draft_token_ids == [11, 12] and torch.equal(inp.draft_probs, q[:2])
    assert result.seqs[0].next_draft_token_ids is None  # plan.draft False: no new block
    runner.execute(StepPlan([], finished_request_ids=["a"]))
    assert len(runner.draft_probs) == 0 and runner.capture_ids == ()
