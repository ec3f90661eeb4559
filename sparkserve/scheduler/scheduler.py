"""Continuous batching over a paged KV cache: which tokens of which requests run in the next step."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sparkserve.config import CacheConfig, SchedulerConfig
from sparkserve.request import Request, RequestStatus
from sparkserve.scheduler.apply_result import apply_seq_result
from sparkserve.scheduler.drafts import DraftSwitch, VerifyPlanner, num_drafts_to_verify, plan_verify_lengths
from sparkserve.scheduler.errors import QueueFullError
from sparkserve.scheduler.kv_manager import KVCacheManager
from sparkserve.scheduler.stop import early_stop_ids
from sparkserve.scheduler.token_view import token_slice
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan, StepResult


class Scheduler:
    """Owner of every live Request: the waiting queue (FCFS, preempted requests at the front), the
    running list (priority = position) and the KV cache manager.

    ``schedule() -> StepPlan`` then ``update(plan, result) -> list[Request]``, alternating; call
    ``update`` after every ``schedule``, even for an empty plan (requests the scheduler had to end
    inside ``schedule`` are reported by the next ``update``). A step's work per request is a token
    count: ``num_tokens - num_computed_tokens`` known tokens (a prefill chunk, or the one decode
    token) plus, when no prefill is outstanding, up to ``len(draft_token_ids)`` drafts to verify.
    The plan is complete when ``schedule`` returns it: the drafts each sequence verifies (with their
    confidences) and whether the runner drafts after the step (``draft_switch``, the draft gate).

    Policies: running requests first, then waiting ones, within ``max_num_batched_tokens`` and
    ``max_num_seqs``. Known tokens of all running requests come before any drafts (drafts only
    use budget and blocks that are left). A running request that cannot get blocks for its known
    tokens preempts (recompute) the last running request, repeatedly, itself last; a request that
    cannot fit even alone in the whole cache ends with FINISHED_LENGTH. Waiting requests are
    admitted without preempting anybody, and none are admitted in a step that preempted.
    """

    def __init__(
        self,
        scheduler_config: SchedulerConfig,
        cache_config: CacheConfig,
        num_blocks: int,
        verify_planner: VerifyPlanner | None = None,
        draft_switch: DraftSwitch | None = None,
        needs_history: bool = False,
    ) -> None:
        self.config = scheduler_config
        self.block_size = cache_config.block_size
        self.kv = KVCacheManager(cache_config.block_size, num_blocks, cache_config.enable_prefix_caching)
        # Speculative decoding's part in scheduling (scheduler/drafts.py): verify lengths (None: every
        # pending draft that fits), whether to draft after the step (None: always), and whether
        # sequences carry their token history (a drafter that reads text, e.g. n-gram).
        self.verify_planner = verify_planner
        self.draft_switch = draft_switch
        self.needs_history = needs_history
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._requests: dict[str, Request] = {}  # live (unfinished) requests
        self._finished_ids: list[str] = []  # since the last schedule()
        self._ended_in_schedule: list[Request] = []  # reported by the next update()
        self.num_preemptions_total = 0
        self.num_prefix_query_tokens = 0  # prompt tokens looked up at first admission
        self.num_prefix_hit_tokens = 0  # of which served from the prefix cache

    # ---- requests in and out -----------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        """Queue a new request; QueueFullError if the queue is full, ValueError for a reused id.

        The prompt is trusted: admission (``Engine.validate_prompt``) already checked that it is not
        empty, leaves room to generate within the context and fits the KV cache; asserted here.
        """
        num_prompt = request.num_prompt_tokens
        max_model_len = min(request.max_model_len, self.config.max_model_len)
        if request.request_id in self._requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if request.status is not RequestStatus.WAITING or request.num_computed_tokens or request.output_token_ids:
            raise ValueError(f"request {request.request_id!r} is not a fresh request")
        assert 0 < num_prompt < max_model_len and self.kv.num_blocks_for(num_prompt) <= self.kv.num_usable_blocks, \
            f"request {request.request_id!r} ({num_prompt} prompt tokens) was not validated by the engine's admission"
        if len(self.waiting) >= self.config.max_waiting:
            raise QueueFullError(f"{len(self.waiting)} requests are waiting already; try again later")
        request.max_model_len = max_model_len
        self._requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_ids: str | Iterable[str]) -> list[Request]:
        """End requests as FINISHED_ABORTED and free their blocks; unknown/finished ids are ignored."""
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        aborted = []
        for request_id in request_ids:
            request = self.finish_request(request_id, RequestStatus.FINISHED_ABORTED)
            if request is not None:
                aborted.append(request)
        return aborted

    def finish_request(self, request_id: str, status: RequestStatus) -> Request | None:
        """End a live request with a finished ``status`` (e.g. a stop string matched); None if unknown."""
        if not status.finished:
            raise ValueError(f"{status} is not a finished status")
        request = self._requests.get(request_id)
        if request is None:
            return None
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._end(request, status)
        return request

    def _end(self, request: Request, status: RequestStatus) -> None:
        """Mark finished and release it (the caller already took it off its queue)."""
        request.status = status
        self._release(request)

    def _release(self, request: Request) -> None:
        """Free a finished request's blocks, forget it, tell the runner at the next schedule."""
        request.draft_token_ids = []
        request.draft_confidences = []
        self.kv.free(request)
        del self._requests[request.request_id]
        self._finished_ids.append(request.request_id)

    # ---- schedule ----------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """Pick this step's work (see the class docstring); never more than the token budget."""
        seqs: list[ScheduledSeq] = []
        budget = self.config.max_num_batched_tokens
        budget, preempted = self._schedule_running(seqs, budget)
        if not preempted:
            self._schedule_waiting(seqs, budget)
        plan = StepPlan(seqs=seqs, finished_request_ids=self._finished_ids)
        if seqs and self.draft_switch is not None:
            plan.draft = self.draft_switch(plan.num_decoding)
        self._finished_ids = []
        return plan

    def _schedule_running(self, seqs: list[ScheduledSeq], budget: int) -> tuple[int, bool]:
        """Two passes: the known tokens of every running request (preempting when blocks run
        out), then drafts with the budget and blocks left, so one request's speculation never
        costs another request its decode token, its blocks or its place."""
        scheduled: list[tuple[Request, int]] = []
        num_preemptions_before = self.num_preemptions_total
        stopped_early = False
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_pending = request.num_tokens - request.num_computed_tokens
            assert num_pending >= 1, f"running request {request.request_id} has nothing to compute"
            num_known = min(num_pending, budget)
            if not self._allocate_or_preempt(request, index, num_known):
                stopped_early = True
                break  # it left the running list, and it was its last member
            scheduled.append((request, num_known))
            budget -= num_known
            index += 1

        draft_caps = plan_verify_lengths(self.verify_planner, [r for r, _ in scheduled],
                                         sum(n for _, n in scheduled))
        for request, num_known in scheduled:
            num_drafts = num_drafts_to_verify(request, budget, draft_caps.get(request.request_id))
            if num_drafts:
                num_drafts = min(num_drafts, max(self.kv.num_free_slots(request) - num_known, 0))
                if num_drafts and not self.kv.allocate_slots(request, num_known + num_drafts):
                    raise AssertionError("allocation within the free slots failed")
            budget -= num_drafts
            seqs.append(self._make_seq(request, num_known, num_drafts))
        return budget, stopped_early or self.num_preemptions_total > num_preemptions_before

    def _allocate_or_preempt(self, request: Request, index: int, num_new_tokens: int) -> bool:
        """Get blocks for ``running[index]``, preempting from the tail of the running list.

        False when the request itself had to leave: preempted (it was the last one left), or
        ended with FINISHED_LENGTH when it is first in line (nothing else holds blocks) and still
        does not fit: recomputing it would never fit either.
        """
        while not self.kv.allocate_slots(request, num_new_tokens):
            victim = self.running.pop()
            if victim is not request:
                self._preempt(victim)
            elif index == 0:
                self._end(request, RequestStatus.FINISHED_LENGTH)
                self._ended_in_schedule.append(request)
                return False
            else:
                self._preempt(request)
                return False
        return True

    def _schedule_waiting(self, seqs: list[ScheduledSeq], budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            if self.kv.num_blocks_for(request.num_tokens) > self.kv.num_usable_blocks:
                self.waiting.popleft()  # a resumed request that outgrew the whole cache
                self._end(request, RequestStatus.FINISHED_LENGTH)
                self._ended_in_schedule.append(request)
                continue
            hit_block_ids, num_hit_tokens = self.kv.get_computed_blocks(request)
            num_new = request.num_tokens - num_hit_tokens
            if num_new > budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_new = budget
            if not self.kv.allocate_slots(request, num_new, hit_block_ids):
                break
            self.waiting.popleft()
            if request.status is RequestStatus.WAITING:  # first admission
                request.num_cached_tokens = num_hit_tokens
                self.num_prefix_query_tokens += request.num_prompt_tokens
                self.num_prefix_hit_tokens += num_hit_tokens
            request.status = RequestStatus.RUNNING
            request.num_computed_tokens = num_hit_tokens
            self.running.append(request)
            seqs.append(self._make_seq(request, num_new))
            budget -= num_new

    def _preempt(self, request: Request) -> None:
        """Recompute preemption: drop its KV and drafts, put it at the front of the waiting queue."""
        self.kv.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.draft_token_ids = []
        request.draft_confidences = []
        request.num_preemptions += 1
        self.num_preemptions_total += 1
        self.waiting.appendleft(request)

    def _make_seq(self, request: Request, num_known: int, num_drafts: int = 0) -> ScheduledSeq:
        """The plan's view of ``request``: ``num_known`` known tokens, then the first ``num_drafts``
        pending drafts with their confidences (copies: the request's own lists change in update)."""
        start = request.num_computed_tokens
        params = request.params
        return ScheduledSeq(
            request_id=request.request_id,
            token_ids=token_slice(request, start, start + num_known) + request.draft_token_ids[:num_drafts],
            num_computed_tokens=start,
            block_ids=list(self.kv.block_ids(request.request_id)),
            sampling=SamplingMeta(
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                seed=params.seed,
                logprobs=params.logprobs,
                min_tokens=params.min_tokens,
                min_tokens_stop_ids=early_stop_ids(request),
            ),
            sample=start + num_known == request.num_tokens,
            num_draft_tokens=num_drafts,
            draft_confidences=request.draft_confidences[:num_drafts],
            num_output_tokens=len(request.output_token_ids),
            max_draft_tokens=params.draft_cap,
            history_token_ids=request.all_token_ids if self.needs_history else None,
        )

    # ---- update ------------------------------------------------------------------------------
    def update(self, plan: StepPlan, result: StepResult) -> list[Request]:
        """Apply the runner's result. Returns, in plan order, the requests that got tokens or
        finished (then those ended inside the last ``schedule``). Finished ones are freed and
        forgotten. Requests aborted/finished since ``schedule`` are skipped."""
        if len(result.seqs) != len(plan.seqs):
            raise ValueError(f"{len(result.seqs)} results for {len(plan.seqs)} scheduled sequences")
        changed: list[Request] = []
        num_finished = 0
        for seq, seq_result in zip(plan.seqs, result.seqs):
            request = self._requests.get(seq.request_id)
            if request is None or request.status is not RequestStatus.RUNNING:
                continue
            num_appended = apply_seq_result(request, seq, seq_result, self.kv)
            if request.finished:
                num_finished += 1
                self._release(request)
            if num_appended or request.finished:
                changed.append(request)
        if num_finished:
            self.running = [r for r in self.running if not r.finished]
        changed.extend(self._ended_in_schedule)
        self._ended_in_schedule = []
        return changed

    # ---- stats -------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        """Fraction of usable KV blocks in use, 0..1 (cached-but-free blocks count as free)."""
        return self.kv.usage

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def get_request(self, request_id: str) -> Request | None:
        """A live (waiting, running or preempted) request; None once it finished."""
        return self._requests.get(request_id)
