"""Service-level objectives and goodput: ``--slo ttft_ms=300,tpot_ms=50,e2el_ms=4000``.

A request is *good* when it succeeded and meets every given bound; goodput is good requests per
second of the run (``vllm bench serve``'s ``request_goodput``).
"""
from __future__ import annotations

SLO_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")  # itl_ms bounds the request's largest gap


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft_ms=300,tpot_ms=50"`` -> ``{"ttft_ms": 300.0, "tpot_ms": 50.0}``; unknown keys are an error."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SLO_KEYS:
            raise ValueError(f"bad SLO {part!r}: want KEY=VALUE with KEY in {', '.join(SLO_KEYS)}")
        out[key] = float(value)
    return out


def meets_slo(req, slo: dict[str, float]) -> bool:
    """``req`` is a ``metrics.RequestRecord``; a failed request never meets an SLO."""
    if not req.success:
        return False
    values = {"ttft_ms": req.ttft_s * 1e3, "tpot_ms": (req.tpot_s or 0.0) * 1e3,
              "itl_ms": max(req.itls_s, default=0.0) * 1e3, "e2el_ms": req.e2e_s * 1e3}
    return all(values[k] <= bound for k, bound in slo.items())


def goodput(records, slo: dict[str, float], duration_s: float) -> tuple[int, float]:
    """(good requests, good requests per second); without an SLO every success counts."""
    good = sum(1 for r in records if meets_slo(r, slo))
    return good, good / duration_s if duration_s > 0 else 0.0
