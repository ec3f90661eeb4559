"""sparkserve's speculation counters, as ``/metrics`` deltas over one run.

From the ``sparkserve:spec_decode_*`` counters: mean acceptance length (tokens emitted per decode
round, tau), mean verify length (drafts sent to the target per decode round), the draft gate's
state (share of its steps that drafted) and the planner's fallbacks by reason. A server without
these metrics (another engine) yields ``{}``.
"""
from __future__ import annotations

import asyncio

P = "sparkserve:spec_decode_"


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{label=value,...}`` -> value for every sample (labels sorted, ``model_name`` dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "model_name")
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def scrape(client) -> dict[str, float]:
    """The server's ``/metrics`` samples, or ``{}`` when it has none we can read."""
    try:
        resp = await client.request("GET", "/metrics")
        return parse_prometheus(resp.body.decode()) if resp.status == 200 else {}
    except Exception:  # another engine's metrics format, or none at all: speculation stats are optional
        return {}


GENERATED = "sparkserve:generation_tokens_total"


async def scrape_settled(client, before: dict[str, float], output_tokens: int, timeout_s: float = 3.0) -> dict:
    """The scrape after a run, once sparkserve's ``/metrics`` has counted the ``output_tokens`` the
    client received (the engine sends a step's statistics with its outputs, so the speculation
    counters are then complete too); bounded by ``timeout_s``, and one scrape for other servers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        after = await scrape(client)
        if GENERATED not in after or after[GENERATED] - before.get(GENERATED, 0.0) >= output_tokens or \
                asyncio.get_running_loop().time() > deadline:
            return after
        await asyncio.sleep(0.05)


def _labelled(samples: dict[str, float], prefix: str) -> dict[str, float]:
    """``prefix{key=v}`` samples -> {v: value}."""
    return {k[len(prefix) + 1:-1].split("=", 1)[1]: v for k, v in samples.items() if k.startswith(prefix + "{")}


def spec_deltas(before: dict[str, float], after: dict[str, float]) -> dict:
    """The run's speculation statistics from two scrapes (``{}`` without sparkserve's counters)."""
    if not any(k.startswith(P) for k in after):
        return {}

    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    rounds_by_len = {int(k): v - _labelled(before, P + "verify_length_total").get(k, 0.0)
                     for k, v in _labelled(after, P + "verify_length_total").items()}
    rounds = sum(rounds_by_len.values())
    if not rounds:  # no decode round counted: this server did not speculate during the run
        return {}
    accepted = d(P + "num_accepted_tokens_total")
    gate_steps, plain = d(P + "draft_gate_steps_total"), d(P + "draft_gate_plain_steps_total")
    fallbacks = {k: v - _labelled(before, P + "scheduler_fallback_total").get(k, 0.0)
                 for k, v in _labelled(after, P + "scheduler_fallback_total").items()}
    return {
        "spec_decode_rounds": rounds,
        "spec_decode_acceptance_length": (accepted + rounds) / rounds if rounds else 0.0,
        "spec_decode_mean_verify_length": sum(k * v for k, v in rounds_by_len.items()) / rounds if rounds else 0.0,
        "spec_decode_verify_length_counts": {str(k): v for k, v in sorted(rounds_by_len.items()) if v},
        "spec_decode_gate_steps": gate_steps,
        "spec_decode_gate_drafting_fraction": (gate_steps - plain) / gate_steps if gate_steps else None,
        "spec_decode_scheduler_fallbacks": {k: v for k, v in fallbacks.items() if v},
        "num_preemptions": d("sparkserve:num_preemptions_total"),
    }
