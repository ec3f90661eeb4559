"""Recompute preemption under block pressure; requests too long for the whole cache."""
from sparkserve.request import RequestStatus

from sched_helpers import FakeRunner, check_drained, drain, make_request, make_scheduler, step


def _run(num_blocks: int, enable_prefix_caching: bool):
    sched = make_scheduler(num_blocks=num_blocks, enable_prefix_caching=enable_prefix_caching)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", list(range(8)), max_tokens=12))
    sched.add_request(make_request("b", list(range(50, 58)), max_tokens=12))
    finished = drain(sched, runner)
    check_drained(sched)
    return sched, {r.request_id: r for r in finished}


def test_preempted_request_completes_with_same_tokens():
    # each request grows to 20 positions = 5 blocks; 6 usable blocks cannot hold both
    for prefix in (False, True):
        roomy, expected = _run(num_blocks=64, enable_prefix_caching=prefix)
        tight, got = _run(num_blocks=7, enable_prefix_caching=prefix)
        assert roomy.num_preemptions_total == 0
        assert tight.num_preemptions_total > 0 and got["b"].num_preemptions > 0
        assert got["a"].num_preemptions == 0  # FCFS: the later request is the victim
        for rid in "ab":
            assert got[rid].output_token_ids == expected[rid].output_token_ids
            assert len(got[rid].output_token_ids) == 12 and got[rid].finish_reason == "length"


def test_preemption_state_and_queue_position():
    sched = make_scheduler(num_blocks=7)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", list(range(8)), max_tokens=12))
    sched.add_request(make_request("b", list(range(50, 58)), max_tokens=12))
    sched.add_request(make_request("c", list(range(80, 82)), max_tokens=1))
    for _ in range(20):
        step(sched, runner)
        b = sched.get_request("b")
        if b is not None and b.status is RequestStatus.PREEMPTED:
            break
    else:
        raise AssertionError("no preemption happened")
    assert sched.waiting[0] is b and b.num_computed_tokens == 0 and not sched.kv.block_ids("b")
    assert b.output_token_ids  # kept: recomputed as a prefill later
    drain(sched, runner)
    check_drained(sched)


def test_request_too_long_for_the_whole_cache_ends_with_length():
    sched = make_scheduler(num_blocks=4)  # 3 usable blocks = 12 positions
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", 8, max_tokens=20))
    finished = drain(sched, runner)
    (request,) = finished
    # positions 0..11 hold KV; the 13th token is known but has no slot to be computed in
    assert request.finish_reason == "length" and request.num_tokens == 13
    assert len(request.output_token_ids) == 5
    check_drained(sched)


def test_resumed_request_hits_its_own_cached_prefix():
    sched = make_scheduler(num_blocks=7)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", list(range(8)), max_tokens=12))
    sched.add_request(make_request("b", list(range(50, 58)), max_tokens=12))
    resumed = []
    while sched.has_unfinished():
        plan = sched.schedule()
        for seq in plan.seqs:
            request = sched.get_request(seq.request_id)
            if request.num_preemptions and seq.num_computed_tokens > 0 and len(seq.token_ids) > 1:
                resumed.append(seq)
        sched.update(plan, runner.execute(plan))
    assert resumed  # the preempted request found some of its own blocks still cached
    check_drained(sched)
