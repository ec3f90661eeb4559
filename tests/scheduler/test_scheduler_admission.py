"""Admission, chunked prefill, budgets, limits, abort and finish."""
import pytest

from sparkserve.request import RequestStatus
from sparkserve.sampling_params import SamplingParams
from sparkserve.scheduler import QueueFullError
from sparkserve.step import SeqResult, StepResult

from sched_helpers import FakeRunner, check_drained, drain, make_request, make_scheduler, step


def test_chunked_prefill_across_steps():
    sched = make_scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", 20, max_tokens=2))
    chunks = []
    for _ in range(3):
        plan, changed = step(sched, runner)
        (seq,) = plan.seqs
        chunks.append((seq.num_computed_tokens, len(seq.token_ids), seq.sample))
    assert chunks == [(0, 8, False), (8, 8, False), (16, 4, True)]
    request = sched.get_request("a")
    assert request.output_token_ids == [7] and request.num_computed_tokens == 20
    assert changed == [request] and request.first_token_time is not None
    finished = drain(sched, runner)
    assert finished == [request] and request.finish_reason == "length" and len(request.output_token_ids) == 2
    check_drained(sched)


def test_budget_shared_running_first():
    sched = make_scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", 6))
    sched.add_request(make_request("b", 6))
    plan, _ = step(sched, runner)
    assert [(s.request_id, len(s.token_ids), s.sample) for s in plan.seqs] == [("a", 6, True), ("b", 2, False)]
    plan, _ = step(sched, runner)
    assert [(s.request_id, len(s.token_ids), s.sample) for s in plan.seqs] == [("a", 1, True), ("b", 4, True)]
    assert plan.seqs[0].num_output_tokens == 1
    drain(sched, runner)
    check_drained(sched)


def test_whole_prompts_only_without_chunked_prefill():
    sched = make_scheduler(max_num_batched_tokens=16, max_model_len=16, enable_chunked_prefill=False)
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", 10))
    sched.add_request(make_request("b", list(range(10))))
    plan, _ = step(sched, runner)
    assert [s.request_id for s in plan.seqs] == ["a"] and sched.num_waiting == 1
    plan, _ = step(sched, runner)
    assert [(s.request_id, len(s.token_ids)) for s in plan.seqs] == [("a", 1), ("b", 10)]


def test_max_num_seqs():
    sched = make_scheduler(max_num_seqs=2)
    runner = FakeRunner(sched)
    for i in range(4):
        sched.add_request(make_request(f"r{i}", 3, max_tokens=2))
    plan, _ = step(sched, runner)
    assert [s.request_id for s in plan.seqs] == ["r0", "r1"]
    assert sched.num_running == 2 and sched.num_waiting == 2
    finished = drain(sched, runner)
    assert sorted(r.request_id for r in finished) == ["r0", "r1", "r2", "r3"]
    check_drained(sched)


def test_sampling_meta_copied():
    sched = make_scheduler()
    sched.add_request(make_request("a", 3, temperature=0.5, top_k=5, top_p=0.9, min_p=0.1, seed=3, logprobs=2))
    (seq,) = sched.schedule().seqs
    meta = seq.sampling
    assert (meta.temperature, meta.top_k, meta.top_p, meta.min_p, meta.seed, meta.logprobs) == (0.5, 5, 0.9, 0.1, 3, 2)
    assert seq.block_ids == sched.kv.block_ids("a") and seq.block_ids is not sched.kv.block_ids("a")


def test_add_request_validation():
    """Prompts are validated once, by the engine's admission (tests/engine: test_invalid_prompts);
    the scheduler checks request ids and its waiting queue."""
    sched = make_scheduler(num_blocks=5, max_model_len=32, max_waiting=2)  # 4 usable blocks = 16 tokens
    sched.add_request(make_request("a", 16))
    with pytest.raises(ValueError, match="in use"):
        sched.add_request(make_request("a", 3))
    sched.add_request(make_request("b", 3))
    with pytest.raises(QueueFullError):
        sched.add_request(make_request("c", 3))
    assert sched.num_waiting == 2 and not issubclass(QueueFullError, ValueError)
    assert sched.get_request("a").max_model_len == 32


def test_abort_frees_every_block_and_is_reported():
    sched = make_scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(sched)
    for i in range(3):
        sched.add_request(make_request(f"r{i}", 7, max_tokens=20))
    step(sched, runner)
    step(sched, runner)
    assert sched.num_running >= 2 and sched.kv_usage > 0
    aborted = sched.abort(["r0", "r2", "unknown"])
    assert [r.request_id for r in aborted] == ["r0", "r2"]
    assert all(r.status is RequestStatus.FINISHED_ABORTED and r.finish_reason == "abort" for r in aborted)
    assert sched.abort("r0") == [] and sched.get_request("r0") is None
    plan = sched.schedule()
    assert plan.finished_request_ids == ["r0", "r2"]
    sched.update(plan, runner.execute(plan))
    assert sched.abort("r1")[0].request_id == "r1"
    check_drained(sched)


def test_abort_between_schedule_and_update_is_skipped():
    sched = make_scheduler()
    sched.add_request(make_request("a", 5))
    sched.add_request(make_request("b", 5))
    plan = sched.schedule()
    result = FakeRunner(sched).execute(plan)
    sched.abort("a")
    changed = sched.update(plan, result)
    assert [r.request_id for r in changed] == ["b"]
    assert sched.schedule().finished_request_ids == ["a"]


def test_finish_request_for_stop_strings():
    sched = make_scheduler()
    runner = FakeRunner(sched)
    sched.add_request(make_request("a", 5, max_tokens=50))
    step(sched, runner)
    request = sched.finish_request("a", RequestStatus.FINISHED_STOPPED)
    assert request.finish_reason == "stop" and not sched.has_unfinished()
    assert sched.finish_request("a", RequestStatus.FINISHED_STOPPED) is None
    with pytest.raises(ValueError):
        sched.finish_request("a", RequestStatus.RUNNING)
    check_drained(sched)


def test_update_rejects_broken_results():
    sched = make_scheduler()
    sched.add_request(make_request("a", 5))
    plan = sched.schedule()
    with pytest.raises(ValueError):
        sched.update(plan, StepResult(seqs=[]))
    with pytest.raises(ValueError):
        sched.update(plan, StepResult(seqs=[SeqResult("a", new_token_ids=[])]))
    with pytest.raises(ValueError):
        sched.update(plan, StepResult(seqs=[SeqResult("a", new_token_ids=[1], num_accepted_drafts=1)]))


def test_empty_schedule():
    sched = make_scheduler()
    plan = sched.schedule()
    assert not plan and plan.num_tokens == 0
    assert sched.update(plan, StepResult()) == []
    assert SamplingParams().draft_cap is None
