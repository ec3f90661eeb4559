"""The FastAPI application: routes, auth, lifespan (engine core start/stop) and draining.

Public routes: ``/health`` (liveness: this process and the engine core), ``/ready`` (model
loaded and not draining), ``/metrics``, ``/version``, ``/openapi.json`` and ``/docs``. Everything under
``/v1``, and ``/tokenize``/``/detokenize`` (``routes_extra.py``), need the API key when one is configured.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from sparkserve import __version__
from sparkserve.engine.client import EngineClient
from sparkserve.server import errors, protocol
from sparkserve.server.metrics import Metrics
from sparkserve.server.responses import TokenText
from sparkserve.server.routes_extra import PROTECTED_PREFIXES, install_openapi_routes, install_token_routes
from sparkserve.server.serving import generate
from sparkserve.server.settings import ServerSettings

log = logging.getLogger("sparkserve.server")


class ServerState:
    """Everything the routes share: settings, engine client, metrics, tokenizer, drain state."""

    def __init__(self, settings: ServerSettings, tokenizer=None):
        self.settings = settings
        self.model_names = settings.model_names
        self.metrics = Metrics(self.model_names[0])
        self.client = EngineClient(settings.engine_kwargs, settings.log_level, self.metrics,
                                   settings.engine_heartbeat_timeout_s)
        self.tokenizer = tokenizer
        self.token_text = TokenText(tokenizer)
        self.created = int(time.time())
        self.draining = False
        self.num_inflight = 0  # generation requests between admission and their last byte
        self.exit_code = 0
        self.on_exit: Callable[[int], None] = lambda code: None  # set by the launcher

    def resolve_model(self, name: str | None) -> str:
        if name is None or name in self.model_names:
            return self.model_names[0]
        raise errors.model_not_found(name, self.model_names)

    def check_accepting(self) -> None:
        if self.draining:
            raise errors.unavailable("the server is shutting down", "draining")
        problem = self.client.health_problem()
        if problem is not None:
            raise errors.unavailable(f"the engine is not running: {problem}", "engine_dead")
        if not self.client.ready:
            raise errors.unavailable("the model is still loading", "loading")

    def enter_request(self) -> None:
        self.num_inflight += 1

    def exit_request(self) -> None:
        self.num_inflight -= 1

    async def watch_engine(self) -> None:
        """Exit 1 if the core dies while loading, or ``engine_death_exit_s`` after it dies (or froze and
        was killed) once serving: its requests already got errors; /health is red meanwhile; the
        supervisor restarts us."""
        await self.client.ready_event.wait()
        if not self.client.ready:  # the core died before the model was loaded
            # the client has logged why (once): the core's message already says "could not start the engine"
            self.exit_code = 1
            self.on_exit(1)
            return
        await self.client.dead.wait()
        if self.client.closing:  # our own shutdown
            return
        self.exit_code = 1
        delay_s = self.settings.engine_death_exit_s
        log.error("the engine core is gone; exiting with code 1 in %g s (--engine-death-exit-s)", delay_s)
        await asyncio.sleep(delay_s)
        self.on_exit(1)

    async def drain(self) -> None:
        """Stop admitting, let in-flight requests finish (up to the shutdown timeout), then exit."""
        if self.draining:
            return
        self.draining = True
        timeout = self.settings.shutdown_timeout_s
        log.info("draining: %d request(s) in flight, waiting up to %g s", self.num_inflight, timeout)
        deadline = time.monotonic() + timeout
        while self.num_inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.num_inflight > 0:
            log.warning("shutdown timeout: aborting %d request(s)", self.num_inflight)
            self.client.fail_all(errors.unavailable("the server is shutting down", "draining"))
            deadline = time.monotonic() + 2.0
            while self.num_inflight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self.on_exit(self.exit_code)


class AuthMiddleware:
    """Pure ASGI (streaming-safe) bearer-token check for ``/v1`` routes; constant-time compare."""

    def __init__(self, app, api_keys: tuple[str, ...]):
        self.app = app
        self.keys = [k.encode() for k in api_keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"].startswith(PROTECTED_PREFIXES):
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            scheme, _, token = auth.partition(b" ")
            ok = scheme.lower() == b"bearer" and any(hmac.compare_digest(token.strip(), k) for k in self.keys)
            if not ok:
                await errors.unauthorized().to_response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _json(obj, status: int = 200) -> Response:
    return Response(protocol.json_encoder.encode(obj), status_code=status, media_type="application/json")


def build_app(settings: ServerSettings, tokenizer=None) -> FastAPI:
    state = ServerState(settings, tokenizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.client.start()
        watcher = asyncio.create_task(state.watch_engine())
        try:
            yield
        finally:
            watcher.cancel()
            await state.client.close()

    app = FastAPI(title="sparkserve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = state
    errors.install_exception_handlers(app)
    app.add_middleware(AuthMiddleware, api_keys=settings.api_keys)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    @app.get("/v1/models")
    async def models() -> Response:
        info = state.client.info
        cards = [protocol.ModelCard(name, state.created, root=settings.model or name,
                                    max_model_len=info.max_model_len if info else None)
                 for name in state.model_names]
        return _json(protocol.ModelList(cards))

    @app.get("/health")
    async def health() -> Response:
        problem = state.client.health_problem()
        if problem is not None:
            return errors.unavailable(f"unhealthy: {problem}", "engine_dead").to_response()
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        try:
            state.check_accepting()
        except errors.APIError as e:
            return e.to_response()
        return _json({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/version")
    async def version() -> Response:
        return _json({"version": __version__})

    install_token_routes(app, state)  # /tokenize, /detokenize (vLLM)
    install_openapi_routes(app)  # /openapi.json, /docs
    return app
