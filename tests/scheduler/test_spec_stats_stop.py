"""Speculation statistics count the tokens a round really emitted: a stop token among the accepted
drafts ends the request there, and neither the drafts after it nor the bonus token were emitted
(issue 18; DeepSpec's evaluator counts the same way)."""
from sched_helpers import FakeRunner, make_request, make_scheduler, step

from sparkserve.engine.spec_stats import SpecStatsTracker

DRAFTS = [5, 7, 9]  # 7 is the stop token


def policy(seq):
    """Every draft accepted, then token 11; the first (plain) step proposes the draft block."""
    if seq.num_draft_tokens:
        return seq.num_draft_tokens, 11, None
    return 0, 3, list(DRAFTS)


def test_a_stop_inside_the_accepted_drafts_emits_up_to_the_stop():
    sched = make_scheduler()
    sched.add_request(make_request("a", 5, stop_token_ids=[7], max_tokens=20))
    runner, tracker = FakeRunner(sched, policy), SpecStatsTracker()
    results = []
    for _ in range(10):
        plan = sched.schedule()
        if not plan:
            break
        result = runner.execute(plan)
        finished = sched.update(plan, result)
        tracker.record(plan, result)
        results.append(result)
        if any(r.finished for r in finished):
            break
    (request,) = [r for r in finished if r.request_id == "a"]
    assert request.output_token_ids == [3, 5, 7] and request.finish_reason == "stop"
    verify_round = results[-1].seqs[0]
    assert verify_round.num_accepted_drafts == 3 and verify_round.num_appended == 2
    stats = tracker.pop("a")
    assert stats.num_accepted_tokens == 3  # the verifier's view: all three drafts matched
    # one decode round (the first step was the prefill): it emitted 5 and 7, not 9 and the bonus 11
    assert stats.num_rounds == 1 and stats.num_emitted_tokens == 2
