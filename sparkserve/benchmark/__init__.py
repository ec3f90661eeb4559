"""``sparkserve bench serve``: an HTTP load-test harness for any OpenAI-compatible server.

One concept per module: ``http_client`` (asyncio HTTP/1.1 + SSE with arrival timestamps),
``workloads`` (prompt sets, random and shared-prefix prompts, output lengths), ``arrivals``
(Poisson/gamma gaps), ``metrics`` (one request's timestamps -> TTFT/TPOT/ITL/E2E, run summaries
under ``vllm bench serve``'s key names), ``slo`` (goodput), ``frontier`` (best throughput at a
per-user speed floor), ``compare`` (setups and their interleaved schedule), ``launcher``
(``--launch``), ``server_stats`` (sparkserve's ``/metrics`` deltas), ``driver`` (one run at one
load), ``report``/``plots``/``progress`` (output), ``cli`` (arguments and the whole invocation).
Torch-free: it runs beside a server without loading the engine.
"""
