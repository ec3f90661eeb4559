"""vLLM's habits beyond OpenAI's routes: ``POST /tokenize``, ``POST /detokenize``, and the OpenAPI schema
at ``/openapi.json`` (rendered at ``/docs``), built from the same msgspec structs the server decodes
requests with, so it says what the server really accepts (unknown fields are ignored).

``/tokenize`` and ``/detokenize`` need the API key like ``/v1`` (``PROTECTED_PREFIXES``); tokenizing
runs off the event loop and is bounded like a prompt (``params.check_prompt_size``).
"""
from __future__ import annotations

import asyncio

import msgspec
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import Response

from sparkserve import __version__
from sparkserve.server import errors, protocol
from sparkserve.server.params import chat_prompt, check_prompt_size, decode_json
from sparkserve.server.serving import max_prompt_bytes, read_body

PROTECTED_PREFIXES = ("/v1", "/tokenize", "/detokenize")


def _json(obj) -> Response:
    return Response(protocol.json_encoder.encode(obj), media_type="application/json")


def _tokenize(req: protocol.TokenizeRequest, tokenizer, limit: int | None) -> list[int]:
    if (req.prompt is None) == (req.messages is None):
        raise errors.invalid_request("give exactly one of 'prompt' and 'messages'", "prompt")
    if req.messages is not None:
        return chat_prompt(protocol.ChatCompletionRequest(messages=req.messages), tokenizer, limit)[1]
    check_prompt_size(req.prompt, limit, "prompt")
    return tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)


def install_token_routes(app: FastAPI, state) -> None:
    def tokenizer():
        if state.tokenizer is None:
            raise errors.invalid_request("this model has no tokenizer")
        return state.tokenizer

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Response:
        req = decode_json(await read_body(request, state.settings.max_body_bytes,
                                          state.settings.body_read_timeout_s), protocol.TokenizeRequest)
        state.resolve_model(req.model)
        tok = tokenizer()
        ids = await asyncio.to_thread(_tokenize, req, tok, max_prompt_bytes(state))
        info = state.client.info
        return _json(protocol.TokenizeResponse(len(ids), info.max_model_len if info else None, ids))

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Response:
        req = decode_json(await read_body(request, state.settings.max_body_bytes,
                                          state.settings.body_read_timeout_s), protocol.DetokenizeRequest)
        state.resolve_model(req.model)
        tok = tokenizer()
        bad = next((t for t in req.tokens if not 0 <= t < tok.vocab_size), None)
        if bad is not None:
            raise errors.invalid_request(f"token id {bad} is outside the vocabulary [0, {tok.vocab_size})", "tokens")
        text = await asyncio.to_thread(tok.decode, list(req.tokens), False)
        return _json(protocol.DetokenizeResponse(text))


# -- OpenAPI ----------------------------------------------------------------------------------------------
_ERROR = {"description": "an error in OpenAI's envelope", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}
_POSTS = {  # path: (summary, request struct, response struct, streams)
    "/v1/chat/completions": ("chat completion (SSE with stream: true)", protocol.ChatCompletionRequest,
                             protocol.ChatCompletion, True),
    "/v1/completions": ("text completion (SSE with stream: true)", protocol.CompletionRequest,
                        protocol.Completion, True),
    "/tokenize": ("prompt or chat messages -> token ids (vLLM)", protocol.TokenizeRequest,
                  protocol.TokenizeResponse, False),
    "/detokenize": ("token ids -> text (vLLM)", protocol.DetokenizeRequest, protocol.DetokenizeResponse, False),
}
_GETS = {"/v1/models": ("served model names", protocol.ModelList), "/health": ("liveness", None),
         "/ready": ("model loaded and not draining (503 otherwise)", None),
         "/metrics": ("Prometheus metrics (text)", None), "/version": ("server version", None)}


def openapi_schema() -> dict:
    """OpenAPI 3.1 from the request/response structs (msgspec's JSON Schema of each)."""
    types = [t for _, req, resp, _ in _POSTS.values() for t in (req, resp)]
    types += [t for _, t in _GETS.values() if t is not None] + [errors.ErrorEnvelope]
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref = dict(zip(types, refs))
    paths: dict = {}
    for path, (summary, req, resp, streams) in _POSTS.items():
        content = {"application/json": {"schema": ref[resp]}}
        if streams:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        paths[path] = {"post": {"summary": summary, "requestBody": {"required": True, "content": {
            "application/json": {"schema": ref[req]}}}, "responses": {"200": {"description": "OK", "content": content},
                                                                     "default": _ERROR}}}
    for path, (summary, resp) in _GETS.items():
        ok = {"description": "OK"}
        if resp is not None:
            ok["content"] = {"application/json": {"schema": ref[resp]}}
        paths[path] = {"get": {"summary": summary, "responses": {"200": ok, "default": _ERROR}}}
    return {"openapi": "3.1.0", "paths": paths, "components": {"schemas": components},
            "info": {"title": "sparkserve", "version": __version__,
                     "description": "OpenAI-compatible API. Unknown request fields are ignored; known ones are "
                                    "strictly typed."}}


def install_openapi_routes(app: FastAPI) -> None:
    schema = msgspec.json.encode(openapi_schema())

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return Response(schema, media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sparkserve API")
