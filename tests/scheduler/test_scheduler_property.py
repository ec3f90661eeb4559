"""Property test: random add / abort / step / finish events over tiny block pools (so preemption,
prefix sharing, eviction and draft rollback all happen), checking the invariants after every step
and, once everything is drained, that no block leaked."""
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkserve.request import RequestStatus
from sparkserve.sampling_params import SpeculativeParams
from sparkserve.scheduler import QueueFullError

from sched_helpers import FakeRunner, check_drained, check_plan, check_state, make_request, make_scheduler

VOCAB = 4  # tiny vocabulary: prompts share prefixes often; token 3 is eos for some requests


@st.composite
def configs(draw):
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    max_model_len = draw(st.integers(4, 40))
    chunked = draw(st.booleans())
    budget = draw(st.integers(1, 24)) if chunked else draw(st.integers(max_model_len, max_model_len + 8))
    return dict(
        block_size=block_size,
        num_blocks=draw(st.integers(2, 24 // block_size + 4)),
        max_num_seqs=draw(st.integers(1, 5)),
        max_num_batched_tokens=budget,
        max_model_len=max_model_len,
        enable_chunked_prefill=chunked,
        enable_prefix_caching=draw(st.booleans()),
        max_waiting=draw(st.integers(1, 16)),
    )


def random_script(rng: random.Random, config: dict, num_events: int) -> list[tuple]:
    """Events: add (prompts often extend an earlier prompt's prefix; a few are invalid), step
    (sometimes aborting a scheduled request between schedule and update), abort, finish."""
    prompts: list[list[int]] = []
    script = []
    for _ in range(num_events):
        roll = rng.random()
        if roll < 0.3:
            length = rng.randint(1, config["max_model_len"] + 2) if rng.random() < 0.9 else 0
            prompt = [rng.randrange(VOCAB) for _ in range(length)]
            if prompts and rng.random() < 0.5:
                base = rng.choice(prompts)
                prompt = base[: rng.randint(0, len(base))] + prompt[: rng.randint(1, 6)]
            prompts.append(prompt)
            max_tokens = rng.choice([None, 1, 2, 5, 12])
            cap = rng.choice([None, None, 0, 1, 4])
            script.append(("add", prompt, max_tokens, rng.randint(0, 3), rng.random() < 0.5, cap))
        elif roll < 0.9:
            script.append(("step", rng.random() < 0.05))
        elif roll < 0.93:
            script.append(("abort", rng.randrange(50)))
        else:
            script.append(("finish", rng.randrange(50)))
    return script


class RandomPolicy:
    """Random sampled tokens, acceptance counts and next draft blocks (seeded)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self, seq):
        rng = self.rng
        num_accepted = rng.randint(0, seq.num_draft_tokens)
        next_drafts = [rng.randrange(VOCAB) for _ in range(rng.choice([0, 0, 1, 3, 6]))]
        return num_accepted, rng.randrange(VOCAB), next_drafts or None


def planner_for(rng: random.Random):
    return lambda requests, _: [rng.randint(0, 4) for _ in requests]


def run_step(sched, runner, rng, abort_mid: bool, ended: dict) -> None:
    plan = sched.schedule()
    check_plan(sched, plan)
    result = runner.execute(plan)
    if abort_mid and plan.seqs:
        victim = rng.choice(plan.seqs).request_id
        for request in sched.abort(victim):
            ended[request.request_id] = request
    for request in sched.update(plan, result):
        assert request.finished or request.status is RequestStatus.RUNNING
        assert len(request.output_token_ids) <= request.max_output_tokens
        if request.finished:
            assert request.request_id not in ended
            ended[request.request_id] = request
    check_state(sched)
    runner.check_committed_blocks()


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(config=configs(), num_events=st.integers(10, 200), seed=st.integers(0, 2**32), use_planner=st.booleans())
def test_random_workloads_never_leak_blocks(config, num_events, seed, use_planner):
    rng = random.Random(seed)
    script = random_script(rng, config, num_events)
    sched = make_scheduler(**config, **({"verify_planner": planner_for(rng)} if use_planner else {}))
    runner = FakeRunner(sched, RandomPolicy(rng))
    usable_tokens = (config["num_blocks"] - 1) * config["block_size"]
    ids: list[str] = []
    added = []
    accepted: set[str] = set()
    ended: dict = {}
    for event in script:
        kind = event[0]
        if kind == "add":
            _, prompt, max_tokens, min_tokens, eos, cap = event
            request_id = f"r{len(ids)}"
            ids.append(request_id)
            speculative = None if cap is None else SpeculativeParams(max_draft_tokens=cap)
            request = make_request(
                request_id, prompt, eos=(3,) if eos else (), max_tokens=max_tokens,
                min_tokens=min_tokens if max_tokens is None else min(min_tokens, max_tokens),  # else a ValueError
                speculative=speculative,
            )
            valid = 0 < len(prompt) < config["max_model_len"] and len(prompt) <= usable_tokens
            if not valid:  # the engine's admission (Engine.validate_prompt) rejects it before the scheduler
                continue
            queue_full = sched.num_waiting >= config["max_waiting"]
            try:
                sched.add_request(request)
            except QueueFullError:
                assert queue_full
            else:
                assert not queue_full
                accepted.add(request_id)
                added.append(request)
        elif kind == "step":
            run_step(sched, runner, rng, event[1], ended)
        elif ids:
            request_id = ids[event[1] % len(ids)]
            if kind == "abort":
                done = sched.abort([request_id])
            else:
                done = [sched.finish_request(request_id, RequestStatus.FINISHED_STOPPED)]
            for request in filter(None, done):
                assert request.request_id not in ended
                ended[request.request_id] = request
            check_state(sched)
    for _ in range(5000):
        if not sched.has_unfinished():
            break
        run_step(sched, runner, rng, False, ended)
    check_drained(sched)
    runner.check_cached_blocks(added)
    assert set(ended) == accepted and all(r.finished for r in ended.values())
    for request in ended.values():
        assert request.num_tokens <= request.max_model_len
        if request.status is RequestStatus.FINISHED_LENGTH:
            # max_tokens, the context limit, or a sequence that outgrew the whole KV cache
            assert len(request.output_token_ids) == request.max_output_tokens or request.num_tokens > usable_tokens
