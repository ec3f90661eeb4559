"""Speculative decoding's part in scheduling: the plan leaves ``schedule`` complete (the drafts each
sequence verifies with their confidences, the draft decision, the history for text drafters)."""
from sched_helpers import FakeRunner, make_request, make_scheduler, step

DRAFTS = [21, 22, 23]


def propose_drafts(seq):
    return min(1, seq.num_draft_tokens), 7, list(DRAFTS)  # accept one draft, always propose three


def confident_runner(sched):
    runner = FakeRunner(sched, propose_drafts)
    execute = runner.execute

    def with_confidences(plan):
        result = execute(plan)
        for res in result.seqs:
            if res.next_draft_token_ids:
                res.next_draft_confidences = [0.9, 0.6, 0.3]
        return result

    runner.execute = with_confidences
    return runner


def test_plan_carries_the_verified_drafts_and_their_confidences():
    sched = make_scheduler(verify_planner=lambda reqs, _: [2] * len(reqs))
    runner = confident_runner(sched)
    sched.add_request(make_request("a", 6, max_tokens=20))
    step(sched, runner)
    (seq,) = sched.schedule().seqs
    assert seq.num_draft_tokens == 2 and seq.draft_token_ids == [21, 22] and seq.num_known_tokens == 1
    assert seq.draft_confidences == [0.9, 0.6]  # a copy of the verified prefix
    assert sched.get_request("a").draft_confidences == [0.9, 0.6, 0.3]


def test_draft_switch_decides_inside_schedule():
    calls = []

    def switch(num_decoding):
        calls.append(num_decoding)
        return len(calls) % 2 == 0

    sched = make_scheduler(draft_switch=switch)
    runner = confident_runner(sched)
    empty = sched.schedule()
    assert empty.draft and calls == []  # an empty plan asks nobody
    sched.update(empty, runner.execute(empty))
    sched.add_request(make_request("a", 6, max_tokens=20))
    sched.add_request(make_request("b", 3, max_tokens=20))
    plan, _ = step(sched, runner)  # two prefills
    assert calls == [0] and plan.draft is False
    plan, _ = step(sched, runner)  # two decodes
    assert calls == [0, 2] and plan.draft is True


def test_planner_hears_the_other_tokens_of_the_step():
    seen = []

    def planner(requests, num_other_tokens):
        seen.append(([r.request_id for r in requests], num_other_tokens))
        return [len(r.draft_token_ids) for r in requests]

    sched = make_scheduler(verify_planner=planner, max_num_batched_tokens=8)
    runner = confident_runner(sched)
    sched.add_request(make_request("a", 6, max_tokens=20))
    step(sched, runner)
    sched.add_request(make_request("b", list(range(200, 212)), max_tokens=20))
    step(sched, runner)  # a: anchor + 3 drafts; b is admitted after the planner ran (4-token chunk)
    assert seen == [(["a"], 0)]
    plan, _ = step(sched, runner)  # a's anchor, then b's next prefill chunk: 7 tokens besides a's anchor
    assert seen[-1] == (["a"], 7) and [len(s.token_ids) for s in plan.seqs] == [1, 7]


def test_history_only_for_text_drafters():
    for needs_history in (False, True):
        sched = make_scheduler(needs_history=needs_history)
        sched.add_request(make_request("a", [5, 6, 7], max_tokens=4))
        (seq,) = sched.schedule().seqs
        assert seq.history_token_ids == ([5, 6, 7] if needs_history else None)
