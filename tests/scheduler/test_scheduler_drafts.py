"""Draft tokens: how they are scheduled, capped, verified and rolled back."""
from sparkserve.sampling_params import SpeculativeParams

from sched_helpers import FakeRunner, check_drained, drain, make_request, make_scheduler, step

DRAFTS = [21, 22, 23]


def scripted(accepts: list[int], drafts=DRAFTS):
    """Policy: accept ``accepts[i]`` drafts at the i-th sampling step, always propose ``drafts``."""
    calls = iter(accepts)

    def policy(seq):
        return min(next(calls, 0), seq.num_draft_tokens), 7, list(drafts)

    return policy


def test_drafts_appended_and_rejected_tail_rolled_back():
    sched = make_scheduler(block_size=4)
    runner = FakeRunner(sched, scripted([0, 1]))
    sched.add_request(make_request("a", 6, max_tokens=20))
    step(sched, runner)  # prefill; samples 7 and proposes 21 22 23
    request = sched.get_request("a")
    assert request.draft_token_ids == DRAFTS and request.draft_confidences == [0.5] * 3
    free_before = sched.kv.num_free_blocks
    plan = sched.schedule()
    (seq,) = plan.seqs
    assert seq.token_ids == [7] + DRAFTS and seq.num_draft_tokens == 3 and seq.sample
    assert seq.num_computed_tokens == 6 and len(seq.block_ids) == 3  # positions 6..9
    assert sched.kv.num_free_blocks == free_before - 1
    sched.update(plan, runner.execute(plan))  # accepts 21, rejects 22 23, samples 7
    assert request.output_token_ids == [7, 21, 7]
    assert request.num_computed_tokens == 8  # 6 + [7, 21]
    assert len(sched.kv.block_ids("a")) == 2 and sched.kv.num_free_blocks == free_before
    drain(sched, runner)
    check_drained(sched)


def test_all_drafts_accepted():
    sched = make_scheduler()
    runner = FakeRunner(sched, scripted([0, 3, 3]))
    sched.add_request(make_request("a", 5, max_tokens=20))
    step(sched, runner)
    step(sched, runner)
    request = sched.get_request("a")
    assert request.output_token_ids == [7, 21, 22, 23, 7] and request.num_computed_tokens == 9


def test_no_drafts_while_prefill_outstanding():
    sched = make_scheduler(max_num_batched_tokens=4)
    runner = FakeRunner(sched, scripted([0] * 10))
    sched.add_request(make_request("a", 3, max_tokens=20))
    step(sched, runner)  # a decodes next, with drafts
    sched.add_request(make_request("b", 9, max_tokens=20))
    plan, _ = step(sched, runner)
    # the budget of 4: a takes its anchor + 3 drafts, b gets nothing this step
    assert [(s.request_id, s.num_draft_tokens) for s in plan.seqs] == [("a", 3)]
    plan, _ = step(sched, runner)
    assert [(s.request_id, len(s.token_ids), s.num_draft_tokens) for s in plan.seqs] == [("a", 4, 3)]


def test_drafts_capped_by_budget_params_planner_and_output_room():
    def first_plan(max_num_batched_tokens=64, max_tokens=20, speculative=None, planner=None):
        kwargs = {"verify_planner": planner} if planner else {}
        sched = make_scheduler(max_num_batched_tokens=max_num_batched_tokens, **kwargs)
        runner = FakeRunner(sched, scripted([0] * 10, drafts=[1, 2, 3, 4, 5]))
        sched.add_request(make_request("a", 3, max_tokens=max_tokens, speculative=speculative))
        step(sched, runner)
        return sched.schedule().seqs[0].num_draft_tokens

    assert first_plan() == 5
    assert first_plan(max_num_batched_tokens=3) == 2
    assert first_plan(speculative=SpeculativeParams(max_draft_tokens=2)) == 2
    assert first_plan(speculative=SpeculativeParams(disable=True)) == 0
    assert first_plan(max_tokens=3) == 1  # 1 generated; the verify step may emit at most 2 more
    seen = []

    def planner(requests, num_other_tokens):
        seen.extend(r.request_id for r in requests)
        return [4]

    assert first_plan(planner=planner) == 4 and seen == ["a"]


def test_drafts_never_cost_another_request_its_blocks():
    sched = make_scheduler(block_size=4, num_blocks=5)  # 4 usable blocks
    runner = FakeRunner(sched, scripted([0] * 20, drafts=[1, 2, 3, 4, 5, 6, 7, 8]))
    sched.add_request(make_request("a", list(range(10, 14)), max_tokens=8))
    sched.add_request(make_request("b", list(range(20, 24)), max_tokens=8))
    step(sched, runner)  # both prefilled: 2 blocks used, 2 free
    plan, _ = step(sched, runner)
    # both anchors need a block first (2); no block is left for drafts, and nobody is preempted
    assert [(s.request_id, s.num_draft_tokens) for s in plan.seqs] == [("a", 3), ("b", 3)]
    assert sched.num_preemptions_total == 0 and sched.kv.num_free_blocks == 0
    drain(sched, runner)
    check_drained(sched)


def test_drafts_use_the_rest_of_a_partial_block():
    sched = make_scheduler(block_size=4, num_blocks=3)  # 2 usable blocks
    runner = FakeRunner(sched, scripted([0] * 20, drafts=[1, 2, 3, 4, 5, 6, 7, 8]))
    sched.add_request(make_request("a", list(range(10, 15)), max_tokens=8))
    step(sched, runner)  # 5 positions: block 2 has 3 free slots, no free block
    plan, _ = step(sched, runner)
    assert plan.seqs[0].num_draft_tokens == 2 and len(plan.seqs[0].block_ids) == 2


def test_drafts_wait_for_every_decode_token_in_the_budget():
    sched = make_scheduler(max_num_batched_tokens=4)
    runner = FakeRunner(sched, scripted([0] * 20))
    sched.add_request(make_request("a", 3, max_tokens=8))
    sched.add_request(make_request("b", list(range(3)), max_tokens=8))
    step(sched, runner)  # a: 3 prompt tokens, b: 1 of 3
    plan, _ = step(sched, runner)
    # a's anchor and b's last 2 prompt tokens first; a's drafts only get the 1 token left
    assert [(s.request_id, len(s.token_ids), s.num_draft_tokens) for s in plan.seqs] == [("a", 2, 1), ("b", 2, 0)]


def test_stop_token_inside_accepted_drafts_ends_exactly_there():
    for stop_kwargs, eos, reason in (({"stop_token_ids": [22]}, (), 22), ({}, (22,), None)):
        sched = make_scheduler()
        runner = FakeRunner(sched, scripted([0, 3]))
        sched.add_request(make_request("a", 6, eos=eos, max_tokens=20, **stop_kwargs))
        step(sched, runner)
        _, changed = step(sched, runner)  # accepts 21 22 23 + samples 7; stops at 22
        (request,) = changed
        assert request.output_token_ids == [7, 21, 22]
        assert request.finish_reason == "stop" and request.stop_reason == reason
        assert request.num_computed_tokens == request.num_tokens and not request.draft_token_ids
        check_drained(sched)
        assert sched.schedule().finished_request_ids == ["a"]


def test_max_tokens_inside_accepted_drafts():
    sched = make_scheduler()
    runner = FakeRunner(sched, scripted([0, 3, 3], drafts=[21, 22, 23]))
    sched.add_request(make_request("a", 6, max_tokens=3))
    step(sched, runner)
    plan, changed = step(sched, runner)
    assert plan.seqs[0].num_draft_tokens == 1  # room for 2 more tokens: 1 draft + 1 sampled
    assert changed[0].output_token_ids == [7, 21, 7] and changed[0].finish_reason == "length"
    check_drained(sched)
