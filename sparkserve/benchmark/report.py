"""The invocation's results: one JSON document (``vllm bench serve`` key names per run) and a
Markdown summary for the terminal (runs, the frontier, failures with samples)."""
from __future__ import annotations

import collections
import json
import os
import re
import statistics

from sparkserve.benchmark.frontier import FrontierPoint

NUM_ERROR_SAMPLES = 5


def error_samples(errors: list[str]) -> list[dict]:
    """The most common kinds of failure (messages alike but for their numbers), each with its count
    and its first message (failures are never dropped silently)."""
    kinds = collections.Counter(re.sub(r"\d+", "N", e) for e in errors if e)
    first = {}
    for e in errors:
        if e:
            first.setdefault(re.sub(r"\d+", "N", e), e)
    return [{"error": first[k], "count": n} for k, n in kinds.most_common(NUM_ERROR_SAMPLES)]


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per load level: the median over repeats of every numeric key (load order kept)."""
    by_load: dict[str, list[dict]] = {}
    for r in runs:
        by_load.setdefault(r["load"], []).append(r)
    out = []
    for load, group in by_load.items():
        row = {"load": load, "repeats": len(group), **{k: v for k, v in group[0].items() if isinstance(v, str)}}
        for k, v in group[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals = [g[k] for g in group if isinstance(g.get(k), (int, float))]
                row[k] = statistics.median(vals) if vals else None
        out.append(row)
    return out


def write_json(path: str, doc: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=float)


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


RUN_COLUMNS = [("setup", "setup"), ("load", "load"), ("completed", "ok"), ("failed", "failed"),
               ("request_throughput", "req/s"), ("output_throughput", "out tok/s"),
               ("median_user_tok_s", "p50 tok/s/user"), ("median_ttft_ms", "p50 TTFT ms"),
               ("p99_ttft_ms", "p99 TTFT ms"), ("median_tpot_ms", "p50 TPOT ms"), ("p99_tpot_ms", "p99 TPOT ms"),
               ("median_itl_ms", "p50 ITL ms"), ("p99_itl_ms", "p99 ITL ms"), ("p99_e2el_ms", "p99 E2E ms"),
               ("request_goodput", "goodput req/s"), ("spec_decode_acceptance_length", "tau"),
               ("spec_decode_mean_verify_length", "verify len"), ("spec_decode_gate_drafting_fraction", "drafting")]


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows])


def markdown(doc: dict) -> str:
    """Runs (medians over repeats), the frontier with ratios to the first setup, failure samples."""
    parts = [f"## sparkserve bench serve: {doc['config'].get('dataset')} ({doc['config'].get('endpoint')})"
             + (" **(interrupted: partial results)**" if doc.get("interrupted") else "")]
    rows = []
    for name, runs in doc["setups"].items():
        for r in aggregate(runs):
            rows.append([name if k == "setup" else r.get(k) for k, _ in RUN_COLUMNS])
    parts.append(table([h for _, h in RUN_COLUMNS], rows))
    if doc.get("frontier"):
        points = [FrontierPoint(**p) for p in doc["frontier"]]
        models = doc.get("models", {})
        base: dict = {}  # (served model, floor) -> the first setup of that model (ratios compare like with like)
        for p in points:
            base.setdefault((models.get(p.setup), p.min_tok_s_user), p)
        parts.append("### Frontier: best output tok/s with median tok/s/user >= floor")
        headers = ["setup", "floor tok/s/user", "best load", "out tok/s", "tok/s/user", "vs first setup of its model"]
        rows = []
        for p in points:
            b = base[models.get(p.setup), p.min_tok_s_user]
            ratio = p.output_throughput / b.output_throughput if b.output_throughput else None
            rows.append([p.setup, p.min_tok_s_user, p.load or "none met it", p.output_throughput, p.user_tok_s,
                         f"{_f(ratio)} ({b.setup})" if ratio is not None else "-"])
        parts.append(table(headers, rows))
    failures = [(name, r["load"], s) for name, runs in doc["setups"].items() for r in runs
                for s in r.get("error_samples", ())]
    if failures:
        parts.append("### Failed requests (count of each kind, first message)")
        parts.append("\n".join(f"- {name} {load}: {s['count']} x {s['error']}" for name, load, s in failures))
    return "\n\n".join(parts) + "\n"
