"""Model-free helpers for scheduler tests: request/scheduler factories, a fake runner that records
what each KV slot holds (so a wrong prefix-cache hit or a committed draft shows up), invariants."""
from __future__ import annotations

from collections.abc import Callable

from sparkserve.config import CacheConfig, SchedulerConfig
from sparkserve.request import Request
from sparkserve.sampling_params import SamplingParams
from sparkserve.scheduler import NULL_BLOCK_ID, Scheduler
from sparkserve.scheduler.prefix_cache import hash_block_tokens
from sparkserve.step import ScheduledSeq, SeqResult, StepPlan, StepResult

SAMPLED_TOKEN = 7


def make_request(request_id: str, prompt: list[int] | int, eos: tuple[int, ...] = (), **params) -> Request:
    if isinstance(prompt, int):
        prompt = [100 + i for i in range(prompt)]
    params.setdefault("max_tokens", 8)
    return Request(request_id, list(prompt), SamplingParams(**params), eos_token_ids=eos)


def make_scheduler(
    block_size: int = 4,
    num_blocks: int = 64,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 64,
    max_model_len: int = 64,
    enable_chunked_prefill: bool = True,
    enable_prefix_caching: bool = True,
    max_waiting: int = 1024,
    **kwargs,
) -> Scheduler:
    sched_cfg = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        enable_chunked_prefill=enable_chunked_prefill,
        max_waiting=max_waiting,
    )
    cache_cfg = CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching)
    return Scheduler(sched_cfg, cache_cfg, num_blocks, **kwargs)


# A policy decides, per scheduled seq, (num_accepted_drafts, sampled token, next drafts).
Policy = Callable[[ScheduledSeq], tuple[int, int, list[int] | None]]


def sample_seven(seq: ScheduledSeq) -> tuple[int, int, list[int] | None]:
    return 0, SAMPLED_TOKEN, None


class FakeRunner:
    """Executes plans without a model: writes each scheduled token into its KV slot and checks
    that every already-computed position holds the request's real token."""

    def __init__(self, scheduler: Scheduler, policy: Policy = sample_seven) -> None:
        self.scheduler = scheduler
        self.policy = policy
        self.block_size = scheduler.block_size
        self.slots: dict[int, list[int | None]] = {}

    def _slot(self, seq: ScheduledSeq, position: int) -> tuple[list[int | None], int]:
        block_id = seq.block_ids[position // self.block_size]
        assert block_id != NULL_BLOCK_ID
        return self.slots.setdefault(block_id, [None] * self.block_size), position % self.block_size

    def check_cached_blocks(self, requests) -> None:
        """Every block findable by hash holds, slot for slot, the tokens its hash names; the
        names are learned from the full blocks of ``requests`` (every request ever added)."""
        pool, block_size = self.scheduler.kv.pool, self.block_size
        truth: dict[bytes, list[int]] = {}
        for request in requests:
            tokens, parent = request.all_token_ids, None
            for start in range(0, len(tokens) - block_size + 1, block_size):
                parent = hash_block_tokens(parent, tokens[start : start + block_size])
                truth[parent] = tokens[start : start + block_size]
        for block_hash, block_id in pool._hash_to_block.items():
            assert block_hash in truth, "a cached hash names no real token sequence"
            assert self.slots.get(block_id) == truth[block_hash], f"cached block {block_id} holds other KV"

    def check_committed_blocks(self) -> None:
        """The committed blocks of running requests hold the requests' own tokens."""
        kv, block_size = self.scheduler.kv, self.block_size
        for request in self.scheduler.running:
            table, tokens = kv.block_ids(request.request_id), request.all_token_ids
            for index in range(kv._num_committed.get(request.request_id, 0)):
                expected = tokens[index * block_size : (index + 1) * block_size]
                assert self.slots.get(table[index]) == expected, (request.request_id, index)

    def execute(self, plan: StepPlan) -> StepResult:
        results = []
        for seq in plan.seqs:
            request = self.scheduler.get_request(seq.request_id)
            tokens = request.all_token_ids
            for position in range(seq.num_computed_tokens):  # the KV we rely on is the right one
                slot, offset = self._slot(seq, position)
                assert slot[offset] == tokens[position], (seq.request_id, position)
            for i, token in enumerate(seq.token_ids):
                slot, offset = self._slot(seq, seq.num_computed_tokens + i)
                slot[offset] = token
            if not seq.sample:
                results.append(SeqResult(seq.request_id))
                continue
            num_accepted, sampled, next_drafts = self.policy(seq)
            drafts = seq.token_ids[len(seq.token_ids) - seq.num_draft_tokens :]
            results.append(
                SeqResult(
                    seq.request_id,
                    new_token_ids=drafts[:num_accepted] + [sampled],
                    num_accepted_drafts=num_accepted,
                    next_draft_token_ids=next_drafts,
                    next_draft_confidences=[0.5] * len(next_drafts) if next_drafts else None,
                )
            )
        return StepResult(seqs=results)


def step(scheduler: Scheduler, runner: FakeRunner) -> tuple[StepPlan, list[Request]]:
    plan = scheduler.schedule()
    check_plan(scheduler, plan)
    changed = scheduler.update(plan, runner.execute(plan))
    check_state(scheduler)
    runner.check_committed_blocks()
    return plan, changed


def drain(scheduler: Scheduler, runner: FakeRunner, max_steps: int = 10_000) -> list[Request]:
    """Step until nothing is left; returns every request reported finished."""
    finished = []
    for _ in range(max_steps):
        if not scheduler.has_unfinished():
            return finished
        _, changed = step(scheduler, runner)
        finished += [r for r in changed if r.finished]
    raise AssertionError("scheduler did not drain")


def check_plan(scheduler: Scheduler, plan: StepPlan) -> None:
    cfg, block_size = scheduler.config, scheduler.block_size
    assert plan.num_tokens <= cfg.max_num_batched_tokens
    assert len(plan.seqs) <= cfg.max_num_seqs
    assert len({s.request_id for s in plan.seqs}) == len(plan.seqs)
    for seq in plan.seqs:
        request = scheduler.get_request(seq.request_id)
        assert request.status.value == "running"
        assert seq.num_computed_tokens == request.num_computed_tokens
        num_known = len(seq.token_ids) - seq.num_draft_tokens
        assert num_known >= 1
        assert seq.token_ids[:num_known] == request.all_token_ids[seq.num_computed_tokens :][:num_known]
        assert seq.sample == (seq.num_computed_tokens + num_known == request.num_tokens)
        assert seq.num_draft_tokens == 0 or seq.sample
        assert len(seq.block_ids) == -(-(seq.num_computed_tokens + len(seq.token_ids)) // block_size)
        assert seq.block_ids == scheduler.kv.block_ids(seq.request_id)
        assert seq.num_output_tokens == len(request.output_token_ids)


def check_state(scheduler: Scheduler) -> None:
    """Ref counts equal table membership; free queue = blocks at 0; tables exactly cover KV."""
    kv, pool = scheduler.kv, scheduler.kv.pool
    cfg = scheduler.config
    assert len(scheduler.running) <= cfg.max_num_seqs
    counts = [0] * pool.num_blocks
    for request in scheduler.running:
        assert request.status.value == "running" and not request.finished
        table = kv.block_ids(request.request_id)
        assert len(table) == -(-request.num_computed_tokens // scheduler.block_size)
        assert 1 <= request.num_tokens - request.num_computed_tokens
        assert request.num_tokens <= request.max_model_len
        for block_id in table:
            counts[block_id] += 1
    for request in scheduler.waiting:
        assert request.status.value in ("waiting", "preempted")
        assert request.num_computed_tokens == 0 and not kv.block_ids(request.request_id)
    assert set(kv._tables) <= {r.request_id for r in scheduler.running}
    assert counts[NULL_BLOCK_ID] == 0
    for block_id in range(pool.num_blocks):
        assert pool.ref_count(block_id) == counts[block_id], block_id
    assert pool.num_free_blocks == sum(1 for c in counts[1:] if c == 0)
    for block_hash, block_id in pool._hash_to_block.items():
        assert pool.block_hash(block_id) == block_hash


def check_drained(scheduler: Scheduler) -> None:
    pool = scheduler.kv.pool
    assert not scheduler.has_unfinished() and scheduler.num_running == 0 and scheduler.num_waiting == 0
    assert all(pool.ref_count(b) == 0 for b in range(pool.num_blocks))
    assert pool.num_free_blocks == pool.num_blocks - 1
    assert scheduler.kv_usage == 0.0
    assert not scheduler.kv._tables and not scheduler.kv._block_hashes and not scheduler.kv._num_committed
