"""The OpenAI-compatible HTTP server (``sparkserve launch``).

Two processes. The API process (this package minus ``core``; FastAPI + uvicorn + uvloop, msgspec
schemas) never imports torch. The engine core process (``core.py``) owns the ``Engine`` and
steps it. They talk msgspec/msgpack frames over a socketpair (``ipc.py``; no pickle).

* ``launch``: CLI flags -> ``ServerSettings``; uvicorn with draining shutdown.
* ``app``: routes, auth, health/readiness, lifespan.  ``serving``: one generation request.
* ``params``: request -> prompt ids + SamplingParams.  ``responses``: deltas -> OpenAI JSON/SSE.
* ``engine_client``: the API side of the socket.  ``core``: the engine side.
* ``protocol``: OpenAI schemas.  ``errors``: the error envelope.  ``metrics``: Prometheus.
"""
