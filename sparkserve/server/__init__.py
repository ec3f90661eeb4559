"""The OpenAI-compatible HTTP server (``sparkserve launch``): it only speaks HTTP (parse, validate,
format, stream).

Two processes. The API process (this package; FastAPI + uvicorn + uvloop, msgspec schemas) never
imports torch: of the engine it imports only ``engine.client`` (the API side of the socket) and
``engine.wire`` (the typed messages). The engine core process (``engine/core.py``) owns the
``Engine`` and steps it; they talk msgspec/msgpack frames over a socketpair (no pickle).

* ``launch``: CLI flags -> ``ServerSettings``; uvicorn with draining shutdown.
* ``app``: routes, auth, health/readiness, lifespan.  ``serving``: one generation request.
* ``params``: request -> prompt ids + SamplingParams.  ``responses``: deltas -> OpenAI JSON/SSE.
* ``protocol``: OpenAI schemas.  ``errors``: the error envelope.  ``metrics``: Prometheus.
"""
