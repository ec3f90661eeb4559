"""The engine's control loop around speculation: the verify-length planner (the scheduler's
``verify_planner`` hook), the live cost table SPS(B) it plans with (profiled at start or loaded from
disk, refined from every step's measured time), and online calibration drift of the confidences."""
from __future__ import annotations

import logging

from sparkserve.config import SpecConfig
from sparkserve.spec_decode.cost_model import CostKey, CostTable, describe_hardware
from sparkserve.spec_decode.draft_gate import DraftGate
from sparkserve.spec_decode.drift import CalibrationDrift
from sparkserve.spec_decode.planner import planner_from_spec
from sparkserve.spec_decode.profile import profile_step_times
from sparkserve.step import StepPlan, StepResult

log = logging.getLogger("sparkserve.spec_decode")


def cost_key(spec: SpecConfig, runner, model_path: str, max_num_batched_tokens: int) -> CostKey:
    """What an engine's step-time table depends on (the file name it is cached under)."""
    return CostKey(model_path, spec.model or spec.method, str(runner.dtype), runner.backend.name,
                   describe_hardware(runner.device), max_num_batched_tokens)


class SpecControl:
    def __init__(self, spec: SpecConfig, runner, proposer, gamma: int, model_path: str, max_num_batched_tokens: int,
                 max_num_seqs: int):
        self.spec, self.runner, self.proposer = spec, runner, proposer
        self.planner = planner_from_spec(spec, max_num_batched_tokens=max_num_batched_tokens)
        self.cost_table: CostTable | None = None
        self.cost_root = spec.cost_cache_dir
        if spec.verify in ("causal", "lagged"):
            key = cost_key(spec, runner, model_path, max_num_batched_tokens)
            table = CostTable.load_cached(key, self.cost_root)
            if table is None:
                limit = float(spec.cost_profile_time_s)
                log.info("profiling step time vs batch tokens (<= %.0f s)", limit)
                table = profile_step_times(lambda b: runner.profile_step(b, max_num_seqs), max_num_batched_tokens,
                                           limit, key=key)
                table.save_cached(self.cost_root)
            self.cost_table = self.planner.cost_table = table
        temps = getattr(proposer, "confidence_temperatures", None)
        self.drift = CalibrationDrift(gamma, temps, ece_bound=spec.drift_ece_bound) \
            if getattr(proposer, "has_confidence", hasattr(proposer, "confidence_temperatures")) else None
        # Load-aware planners also decide whether drafting pays at all (spec_decode/draft_gate.py).
        self.gate = DraftGate() if spec.verify in ("causal", "lagged") and spec.draft_gate else None
        self.num_steps = 0

    def decide_draft(self, plan: StepPlan) -> bool:
        """Whether the runner drafts after this step (always, without the gate)."""
        return True if self.gate is None or not plan.seqs else self.gate.decide(plan.num_decoding)

    @property
    def verify_planner(self):
        """The scheduler hook; None for plain 'fixed' (the scheduler then verifies every draft)."""
        return None if self.spec.verify == "fixed" and self.spec.verify_k is None else self.planner

    def confidences_before_update(self, plan: StepPlan, scheduler) -> list[tuple[int, list[float]]]:
        """The confidences of the drafts each sequence verifies now (update overwrites them)."""
        if self.drift is None:
            return []
        out = []
        for i, s in enumerate(plan.seqs):
            if s.num_draft_tokens:
                req = scheduler.get_request(s.request_id)
                if req is not None and req.draft_confidences:
                    out.append((i, list(req.draft_confidences[:s.num_draft_tokens])))
        return out

    def after_step(self, plan: StepPlan, result: StepResult, verified: list[tuple[int, list[float]]]) -> None:
        self.num_steps += 1
        if self.gate is not None and plan.seqs:
            emitted = sum(len(s.new_token_ids) for s in result.seqs)
            self.gate.observe(plan.num_decoding, plan.has_prefill, emitted, result.step_time_s)
        # the table models steps that run the drafter; a step that skipped it would teach it wrong times
        if self.cost_table is not None and plan.seqs and plan.draft and result.step_time_s > 0:
            self.cost_table.observe(plan.num_tokens, result.step_time_s)
            if self.num_steps % 2000 == 0:
                self.cost_table.save_cached(self.cost_root)
        for i, conf in verified:
            if self.drift.observe(conf, plan.seqs[i].num_draft_tokens, result.seqs[i].num_accepted_drafts):
                self.proposer.confidence_temperatures = list(self.drift.temperatures)
                log.info("confidence calibration drifted: refit STS temperatures %s", self.drift.temperatures)

    def stats(self) -> dict:
        out = {"planner": self.planner.stats()}
        if self.cost_table is not None:
            out["cost_table"] = {"age_s": self.cost_table.age_s, "prediction_error": self.cost_table.prediction_error}
        if self.drift is not None:
            out["calibration"] = self.drift.stats()
        if self.gate is not None:
            out["draft_gate"] = self.gate.stats()
        return out
