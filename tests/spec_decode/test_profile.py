"""The profiler's synthetic steps: traffic-shaped plans built outside the runner, run through
``runner.execute``, their request ids dropped afterwards."""
from types import SimpleNamespace

from sparkserve.spec_decode.profile import runner_step_time, synthetic_plan
from sparkserve.step import StepResult


class RecordingRunner(SimpleNamespace):
    def execute(self, plan):
        self.plans.append(plan)
        return StepResult(step_time_s=0.25 if plan.seqs else 0.0)


def make_runner(num_blocks=64, gamma=3):
    return RecordingRunner(block_size=4, num_blocks=num_blocks, gamma=gamma, vocab_size=50,
                           max_position_embeddings=40, plans=[])


def test_plan_is_decodes_with_verify_blocks_then_prefill_chunks():
    plan = synthetic_plan(make_runner(), 30, max_num_seqs=5, context_len=8)
    decodes, prefills = plan.seqs[:5], plan.seqs[5:]
    assert plan.num_tokens == 30 and plan.draft
    assert all(s.num_draft_tokens == 3 and s.num_known_tokens == 1 and s.num_computed_tokens == 8 for s in decodes)
    assert [len(s.token_ids) for s in prefills] == [10] and prefills[0].num_computed_tokens == 0
    assert all(len(s.history_token_ids) == s.num_computed_tokens + s.num_known_tokens for s in plan.seqs)
    assert all(s.sampling.temperature == 0.0 for s in plan.seqs)
    blocks = [b for s in plan.seqs for b in s.block_ids]
    assert len(blocks) == len(set(blocks)) and min(blocks) == 1  # disjoint, block 0 never used
    long = synthetic_plan(make_runner(), 100, max_num_seqs=0)  # chunks no longer than the model's positions
    assert [len(s.token_ids) for s in long.seqs] == [35, 35, 30]


def test_a_small_cache_truncates_the_plan_and_ids_are_dropped():
    runner = make_runner(num_blocks=12)  # blocks 1..11; a decode of 8 + 4 tokens + room for 4 more: 4 blocks
    plan = synthetic_plan(runner, 30, max_num_seqs=5, context_len=8)
    assert len(plan.seqs) == 2 and max(b for s in plan.seqs for b in s.block_ids) == 8
    assert runner_step_time(runner, 30, max_num_seqs=5, context_len=8) == 0.25
    step, cleanup = runner.plans
    assert not cleanup.seqs and cleanup.finished_request_ids == [s.request_id for s in step.seqs]


def test_plans_by_drafting_count():
    """R = 0: plain decoding (no drafts, drafting off); R > 0: exactly R sampling sequences share the
    verified drafts (<= gamma each), any prefill beyond that does not sample, and all R draft."""
    plain = synthetic_plan(make_runner(), 9, max_num_seqs=5, context_len=8, num_drafting=0)
    assert not plain.draft and plain.num_tokens == 9 and plain.num_decoding == 5
    assert all(s.num_draft_tokens == 0 for s in plain.seqs) and plain.seqs[-1].sample  # a prompt's last chunk
    spec = synthetic_plan(make_runner(), 10, max_num_seqs=5, context_len=8, num_drafting=4)
    assert spec.draft and spec.num_tokens == 10 and [s.num_draft_tokens for s in spec.seqs] == [2, 2, 1, 1]
    assert all(s.sample and s.num_computed_tokens == 8 for s in spec.seqs)
    over = synthetic_plan(make_runner(), 20, max_num_seqs=5, context_len=8, num_drafting=2)  # 2 x (1 + 3) + 12
    assert over.num_tokens == 20 and sum(s.sample for s in over.seqs) == 2 and not over.seqs[-1].sample
    chunk = over.seqs[-1]
    assert len(chunk.history_token_ids) == len(chunk.token_ids) + 1  # the prompt goes on past this chunk
    assert runner_step_time(make_runner(), 6, max_num_seqs=5, num_drafting=3) == 0.25
