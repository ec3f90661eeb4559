"""The engine's control loop around speculation, in two halves.

Scheduling (the scheduler calls these while it builds a plan, ``scheduler/drafts.py``):
``verify_planner``, the verify-length planner, with the live cost table SPS(B, R) it plans with
(profiled at start or loaded from disk); ``decide_draft``, the draft gate (does drafting pay at this
load?); ``needs_history`` (does the drafter read token text?).

Update (the engine calls ``observe(plan, result)`` once per step): the measured step time refines
the cost table t(B, R) (every step: B forward tokens, R requests that drafted after it) and feeds the
gate, and the verified drafts' confidences against their acceptance track calibration drift
(refitting the drafter's STS temperatures when it drifts).

``NoSpecControl`` is the same interface for an engine without a drafter.
"""
from __future__ import annotations

import logging

from sparkserve.config import SpecConfig
from sparkserve.scheduler.drafts import VerifyPlanner
from sparkserve.spec_decode.cost_model import CostKey, CostTable, describe_hardware
from sparkserve.spec_decode.draft_gate import DraftGate
from sparkserve.spec_decode.drift import CalibrationDrift
from sparkserve.spec_decode.planner import planner_from_spec
from sparkserve.spec_decode.profile import profile_runner
from sparkserve.spec_decode.types import Proposer
from sparkserve.step import StepPlan, StepResult

log = logging.getLogger("sparkserve.spec_decode")

COST_TABLE_SAVE_EVERY = 2000  # steps between writes of the refined cost table to the disk cache


def cost_key(spec: SpecConfig, runner, model_path: str, max_num_batched_tokens: int) -> CostKey:
    """What an engine's step-time table depends on (the file name it is cached under)."""
    dtype = f"{runner.dtype}, weights {runner.weight_dtypes}"  # bf16 storage streams half the bytes
    return CostKey(model_path, spec.model or spec.method, dtype, runner.backend.name,
                   describe_hardware(runner.device), max_num_batched_tokens)


class NoSpecControl:
    """No drafter: no planner, never a draft decision to make, nothing to observe."""

    needs_history = False
    verify_planner: VerifyPlanner | None = None

    def decide_draft(self, num_decoding: int) -> bool:
        return True

    def observe(self, plan: StepPlan, result: StepResult) -> None:
        return None

    def stats(self) -> dict:
        return {}


class SpecControl:
    def __init__(self, spec: SpecConfig, runner, proposer: Proposer, gamma: int, model_path: str,
                 max_num_batched_tokens: int, max_num_seqs: int):
        self.spec, self.proposer = spec, proposer
        self.needs_history = proposer.needs_history
        self.planner = planner_from_spec(spec, max_num_batched_tokens=max_num_batched_tokens)
        self.cost_table: CostTable | None = None
        load_aware = spec.verify in ("causal", "lagged")
        if load_aware:
            self.cost_table = self.planner.cost_table = _cost_table(spec, runner, model_path,
                                                                    max_num_batched_tokens, max_num_seqs)
        self.drift = CalibrationDrift(gamma, proposer.confidence_temperatures, ece_bound=spec.drift_ece_bound) \
            if proposer.has_confidence else None
        # Load-aware planners also decide whether drafting pays at all (spec_decode/draft_gate.py).
        self.gate = DraftGate() if load_aware and spec.draft_gate else None
        self.num_steps = 0

    # ---- scheduling ---------------------------------------------------------------------------
    @property
    def verify_planner(self) -> VerifyPlanner | None:
        """The scheduler's hook; None for plain 'fixed' (the scheduler then verifies every draft)."""
        return None if self.spec.verify == "fixed" and self.spec.verify_k is None else self.planner

    def decide_draft(self, num_decoding: int) -> bool:
        """Whether the runner drafts after a step with ``num_decoding`` decoding sequences (always,
        without the gate). The scheduler's ``draft_switch``: called once per non-empty plan."""
        return True if self.gate is None else self.gate.decide(num_decoding)

    # ---- update -------------------------------------------------------------------------------
    def observe(self, plan: StepPlan, result: StepResult) -> None:
        """Count one executed step: gate rates, cost-table refinement, calibration drift."""
        self.num_steps += 1
        if self.gate is not None and plan.seqs:
            emitted = sum(len(s.new_token_ids) for s in result.seqs)
            self.gate.observe(plan.num_decoding, plan.has_prefill, emitted, result.step_time_s)
        # every step teaches t(B, R): R = requests that drafted after it (0 when the gate turned drafting off)
        if self.cost_table is not None and plan.seqs and result.step_time_s > 0:
            num_drafting = sum(r.next_draft_token_ids is not None for r in result.seqs) if plan.draft else 0
            self.cost_table.observe(plan.num_tokens, result.step_time_s, num_drafting)
            if self.num_steps % COST_TABLE_SAVE_EVERY == 0:
                self.cost_table.save_cached(self.spec.cost_cache_dir)
        if self.drift is None:
            return
        for seq, res in zip(plan.seqs, result.seqs):
            if seq.num_draft_tokens and seq.draft_confidences and \
                    self.drift.observe(seq.draft_confidences, seq.num_draft_tokens, res.num_accepted_drafts):
                self.proposer.confidence_temperatures = list(self.drift.temperatures)
                log.info("confidence calibration drifted: refit STS temperatures %s", self.drift.temperatures)

    def stats(self) -> dict:
        out = {"planner": self.planner.stats()}
        if self.cost_table is not None:
            table = self.cost_table
            out["cost_table"] = {"age_s": table.age_s, "prediction_error": table.prediction_error,
                                 "prediction_error_plain": table.error("plain"),
                                 "prediction_error_drafting": table.error("drafting")}
        if self.drift is not None:
            out["calibration"] = self.drift.stats()
        if self.gate is not None:
            out["draft_gate"] = self.gate.stats()
        return out


def _cost_table(spec: SpecConfig, runner, model_path: str, max_num_batched_tokens: int,
                max_num_seqs: int) -> CostTable:
    """The cached table for this setup, or a fresh profile (then cached)."""
    key = cost_key(spec, runner, model_path, max_num_batched_tokens)
    table = CostTable.load_cached(key, spec.cost_cache_dir)
    if table is None:
        log.info("profiling step time vs batch tokens and drafting requests (<= %.0f s)", spec.cost_profile_time_s)
        table = profile_runner(runner, max_num_batched_tokens, max_num_seqs, float(spec.cost_profile_time_s), key=key)
        table.save_cached(spec.cost_cache_dir)
    return table
