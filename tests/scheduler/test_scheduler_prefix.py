"""Prefix-cache hits across requests."""
from sched_helpers import FakeRunner, check_drained, drain, make_request, make_scheduler, step

PROMPT = list(range(1, 11))  # 10 tokens: 2 full blocks of 4


def test_second_request_hits_finished_prefix():
    sched = make_scheduler()
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", PROMPT, max_tokens=3))
    drain(sched, runner)
    sched.add_request(make_request("b", PROMPT[:8] + [99, 98, 97], max_tokens=3))
    plan, _ = step(sched, runner)
    (seq,) = plan.seqs
    b = sched.get_request("b")
    assert b.num_cached_tokens == 8 and seq.num_computed_tokens == 8 and len(seq.token_ids) == 3
    assert sched.num_prefix_hit_tokens == 8 and sched.num_prefix_query_tokens == 21
    drain(sched, runner)
    check_drained(sched)


def test_identical_prompt_leaves_one_token_to_compute():
    sched = make_scheduler()
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", PROMPT[:8], max_tokens=1))
    drain(sched, runner)
    sched.add_request(make_request("b", PROMPT[:8], max_tokens=1))
    plan, _ = step(sched, runner)
    # 8 tokens = 2 full blocks, but the last token must be computed: only the first block hits
    assert plan.seqs[0].num_computed_tokens == 4 and len(plan.seqs[0].token_ids) == 4
    check_drained(sched)


def test_concurrent_requests_share_blocks():
    sched = make_scheduler()
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", PROMPT, max_tokens=10))
    step(sched, runner)  # a's 2 full prompt blocks are now cached
    sched.add_request(make_request("b", PROMPT, max_tokens=10))
    plan, _ = step(sched, runner)
    a_table, b_table = sched.kv.block_ids("a"), sched.kv.block_ids("b")
    assert a_table[:2] == b_table[:2] and a_table[2] != b_table[2]
    assert all(sched.kv.pool.ref_count(block_id) == 2 for block_id in a_table[:2])
    assert [len(s.token_ids) for s in plan.seqs] == [1, 2]
    drain(sched, runner)
    check_drained(sched)


def test_generated_tokens_are_cached_too():
    sched = make_scheduler()
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", PROMPT, max_tokens=6))
    (a,) = drain(sched, runner)
    sched.add_request(make_request("b", a.all_token_ids + [5], max_tokens=1))
    plan, _ = step(sched, runner)
    # 16 tokens were known, the last one's KV never computed: 15 computed -> 3 full blocks cached
    assert plan.seqs[0].num_computed_tokens == 12


def test_no_hits_when_disabled():
    sched = make_scheduler(enable_prefix_caching=False)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", PROMPT, max_tokens=2))
    drain(sched, runner)
    sched.add_request(make_request("b", PROMPT, max_tokens=2))
    plan, _ = step(sched, runner)
    assert plan.seqs[0].num_computed_tokens == 0 and sched.get_request("b").num_cached_tokens == 0
