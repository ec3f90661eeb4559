"""The spec control loop: its scheduling half (verify planner, draft gate) and its update half
(``observe``: cost table, gate rates, calibration drift from the plan's confidences)."""
import math
from types import SimpleNamespace

from sparkserve.config import SpecConfig
from sparkserve.engine.spec_control import NoSpecControl, SpecControl, cost_key
from sparkserve.spec_decode.cost_model import CostTable
from sparkserve.step import SamplingMeta, ScheduledSeq, SeqResult, StepPlan, StepResult

RUNNER = SimpleNamespace(dtype="torch.float32", weight_dtypes="float32", backend=SimpleNamespace(name="torch"), device="cpu")
BUDGET = 64


def proposer(has_confidence=True):
    return SimpleNamespace(needs_history=False, has_confidence=has_confidence, confidence_temperatures=None)


def control(tmp_path, prop=None, **spec):
    """A SpecControl whose cost table comes from the cache (no profiling, no model)."""
    spec = SpecConfig(method="dspark", model="d", cost_cache_dir=str(tmp_path), **spec)
    table = CostTable([1, BUDGET], [0.01, 0.02], key=cost_key(spec, RUNNER, "target", BUDGET))
    table.save_cached(str(tmp_path))
    return SpecControl(spec, RUNNER, prop or proposer(), 3, "target", BUDGET, 8)


def decode_seq(rid, drafts, confidences):
    return ScheduledSeq(rid, [5] + drafts, 10, [1], SamplingMeta(), num_draft_tokens=len(drafts),
                        draft_confidences=confidences)


def test_fixed_without_k_leaves_every_draft_to_the_scheduler(tmp_path):
    assert control(tmp_path).verify_planner is None and control(tmp_path, verify_k=2).verify_planner is not None
    plain = NoSpecControl()
    assert plain.verify_planner is None and plain.decide_draft(5) and not plain.needs_history and plain.stats() == {}


def test_drift_observes_the_plans_confidences(tmp_path):
    ctl = control(tmp_path)
    plan = StepPlan([decode_seq("a", [7, 8], [0.9, 0.5]), decode_seq("b", [], []), decode_seq("c", [7], [])])
    result = StepResult([SeqResult("a", [7, 9], 1), SeqResult("b", [4]), SeqResult("c", [3])], step_time_s=0.01)
    ctl.observe(plan, result)
    assert ctl.drift.num_rounds == 1  # only "a" verified drafts that carry confidences
    ((logits, accepted),) = ctl.drift._rounds
    assert accepted == 1 and [round(z, 3) for z in logits] == [round(math.log(9), 3), 0.0]  # logit(c), T = 1
    assert control(tmp_path, proposer(has_confidence=False)).drift is None


def test_cost_table_learns_from_every_step_with_its_drafting_count_and_the_gate_decides(tmp_path):
    ctl = control(tmp_path, verify="causal")
    assert ctl.gate is not None and ctl.verify_planner is ctl.planner and ctl.planner.cost_table is ctl.cost_table
    seen = []
    ctl.cost_table.observe = lambda b, t, r=0: seen.append((b, t, r))
    plan = StepPlan([decode_seq("a", [7], [0.9]), decode_seq("b", [], [])])
    result = StepResult([SeqResult("a", [7, 9], 1, next_draft_token_ids=[1, 2]), SeqResult("b", [4])],
                        step_time_s=0.05)
    plan.draft = False
    ctl.observe(plan, result)  # drafting off: R = 0
    plan.draft = ctl.decide_draft(plan.num_decoding)
    assert plan.draft  # the gate measures drafting first
    ctl.observe(plan, result)  # only "a" drafted after the step: R = 1
    assert seen == [(3, 0.05, 0), (3, 0.05, 1)] and ctl.gate.num_steps == 1
    assert control(tmp_path, verify="causal", draft_gate=False).gate is None
    assert set(ctl.stats()) == {"planner", "cost_table", "calibration", "draft_gate"}
