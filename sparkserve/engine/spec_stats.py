"""Per-request and engine-wide speculative-decoding counters, from each step's plan and result."""
from __future__ import annotations

from sparkserve.outputs import SpecDecodeStats
from sparkserve.step import StepPlan, StepResult


def _add(stats: SpecDecodeStats, verified: int, accepted: int, proposed: int, decode_round: bool,
         emitted: int) -> None:
    stats.num_verified_draft_tokens += verified
    stats.num_accepted_tokens += accepted
    stats.num_draft_tokens += proposed
    if verified:
        stats.num_drafts += 1
    if decode_round:
        stats.num_rounds += 1
        stats.num_emitted_tokens += emitted
    if len(stats.accepted_per_pos) < verified:
        stats.accepted_per_pos.extend([0] * (verified - len(stats.accepted_per_pos)))
    for k in range(accepted):
        stats.accepted_per_pos[k] += 1


class SpecStatsTracker:
    """``per_request`` lives until the request is popped; ``total`` accumulates forever (metrics)."""

    def __init__(self):
        self.per_request: dict[str, SpecDecodeStats] = {}
        self.total = SpecDecodeStats()
        self.verify_length_counts: dict[int, int] = {}  # verify length l -> rounds

    def record(self, plan: StepPlan, result: StepResult) -> None:
        for seq, res in zip(plan.seqs, result.seqs):
            if not seq.sample:
                continue
            verified, accepted = seq.num_draft_tokens, res.num_accepted_drafts
            proposed = len(res.next_draft_token_ids or ())
            decode_round = seq.num_known_tokens == 1
            if not (verified or proposed or decode_round):
                continue
            # emitted: what the request got; a stop token among the accepted drafts ends it there (no bonus)
            emitted = accepted + 1 if res.num_appended is None else res.num_appended
            stats = self.per_request.setdefault(seq.request_id, SpecDecodeStats())
            _add(stats, verified, accepted, proposed, decode_round, emitted)
            _add(self.total, verified, accepted, proposed, decode_round, emitted)
            if decode_round:
                self.verify_length_counts[verified] = self.verify_length_counts.get(verified, 0) + 1

    def pop(self, request_id: str) -> SpecDecodeStats:
        return self.per_request.pop(request_id, SpecDecodeStats())


def merge(stats: list[SpecDecodeStats]) -> SpecDecodeStats:
    out = SpecDecodeStats()
    for s in stats:
        out.num_drafts += s.num_drafts
        out.num_draft_tokens += s.num_draft_tokens
        out.num_verified_draft_tokens += s.num_verified_draft_tokens
        out.num_accepted_tokens += s.num_accepted_tokens
        out.num_rounds += s.num_rounds
        out.num_emitted_tokens += s.num_emitted_tokens
        for k, v in enumerate(s.accepted_per_pos):
            if k >= len(out.accepted_per_pos):
                out.accepted_per_pos.append(0)
            out.accepted_per_pos[k] += v
    return out
