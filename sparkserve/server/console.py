"""What an operator sees on the console: one log format for sparkserve's and uvicorn's loggers, probes
kept out of the access log, the one-line ready summary and one INFO line per finished request.

Every line is ``TIME LEVEL LOGGER: message``. ``/health``, ``/ready`` and ``/metrics`` (load balancer
and Prometheus probes) are left out of uvicorn's access log unless ``--log-level debug``.
"""
from __future__ import annotations

import logging
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROBE_PATHS = ("/health", "/ready", "/metrics")
request_log = logging.getLogger("sparkserve.request")


class ProbeFilter(logging.Filter):
    """Drops uvicorn access-log records of probe routes (args: client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and len(args) >= 3 and str(args[2]).split("?", 1)[0] in PROBE_PATHS)


def configure_logging(level: str) -> None:
    """The root handler in ``LOG_FORMAT``; uvicorn's loggers propagate to it (launch passes
    ``log_config=None``), so the two formats no longer mix."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    if level != "debug":
        logging.getLogger("uvicorn.access").addFilter(ProbeFilter())


def ready_summary(settings, info, url: str) -> str:
    """One line when the server can answer: where, what model and names, dtype/device, drafter, planner."""
    kw = settings.engine_kwargs
    spec = kw.get("speculative_config") or {}
    method = info.spec_method if info is not None else spec.get("method", "none")
    if method and method != "none":
        drafter = f"drafter {method}" + (f" ({spec['model']})" if spec.get("model") else "")
        planner = f", planner {spec.get('verify', 'fixed')}" + (" + draft gate" if spec.get("draft_gate", True)
                                                                 and spec.get("verify") in ("causal", "lagged")
                                                                 else "")
    else:
        drafter, planner = "no speculation", ""
    names = ", ".join(settings.model_names)
    ctx = f", context {info.max_model_len} tokens, {info.num_blocks} KV blocks" if info is not None else ""
    return (f"ready at {url} (model names: {names}; model {settings.model_path}; dtype {kw.get('dtype', 'auto')}, "
            f"device {kw.get('device', 'auto')}{ctx}; {drafter}{planner})")


def log_admitted(request_id: str, kind: str, num_prompt_tokens: int, sampling: dict) -> None:
    """DEBUG: a request the engine queued, with its effective sampling settings (defaults filled in)."""
    if request_log.isEnabledFor(logging.DEBUG):
        shown = {k: v for k, v in sampling.items() if v not in (None, [], False)}
        request_log.debug("%s %s admitted: prompt_tokens=%d %s", request_id, kind, num_prompt_tokens, shown)


def log_request(request_id: str, kind: str, num_prompt_tokens: int, choices, spec_decode, start_s: float,
                status: str, ttft_s: float | None = None) -> None:
    """One INFO line per generation request: id, tokens in/out, latency, acceptance, finish reason(s)."""
    latency_s = time.monotonic() - start_s
    out = sum(c.num_output_tokens for c in choices)
    reasons = ",".join(sorted({str(c.finish_reason) for c in choices}))
    accept = ""
    if spec_decode is not None and spec_decode.num_drafts:
        accept = (f" accepted={spec_decode.num_accepted_tokens}/{spec_decode.num_verified_draft_tokens}"
                  f" mean_acceptance_length={spec_decode.mean_acceptance_length:.2f}")
    request_log.info("%s %s status=%s prompt_tokens=%d output_tokens=%d latency=%.3fs finish=%s%s",
                     request_id, kind, status, num_prompt_tokens, out, latency_s, reasons, accept)
    if ttft_s is not None:
        request_log.debug("%s time to first token %.3fs, %.1f output tokens/s after it", request_id, ttft_s,
                          (out - 1) / max(latency_s - ttft_s, 1e-9) if out > 1 else 0.0)
