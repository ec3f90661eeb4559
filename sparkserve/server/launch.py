"""``sparkserve launch``: serve a model over an OpenAI-compatible HTTP API.

Flags mirror vLLM's where the meaning is the same. This module runs in the API process and must
not import torch (the engine is built in the core process from ``engine_kwargs``).

Shutdown: the first SIGTERM/SIGINT starts draining (``/ready`` turns 503, new generation
requests get 503, in-flight ones finish for up to ``--shutdown-timeout`` seconds, the rest get an
error), then the server stops, the engine core exits and the process exits 0. A second signal
exits at once. If the engine core dies or freezes, in-flight requests get errors and the process
exits 1 ``--engine-death-exit-s`` seconds later (and exits 1 from a drain after that).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import uvicorn

from sparkserve.cli_args import speculative_config_arg, with_default_planner
from sparkserve.server.console import configure_logging, ready_summary
from sparkserve.server.http_protocol import EnvelopeHttpProtocol
from sparkserve.server.preflight import preflight
from sparkserve.server.settings import ServerSettings, generation_defaults, has_tokenizer

log = logging.getLogger("sparkserve.server")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LIMIT_CONCURRENCY = 4096  # open connections + tasks; beyond it uvicorn answers 503


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                   help="model directory, as vLLM's positional argument (same as --model)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, metavar="DIR",
                   help="model directory (HF layout: config.json, safetensors, tokenizer); "
                        "default: the embedded demo model")
    m.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer directory (default: --model)")
    m.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="name(s) clients use in the 'model' field; the first is reported in responses "
                        "(default: the --model argument exactly as given, e.g. 'models/qwen3', or "
                        "'sparkserve-demo' without --model)")
    m.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weight and activation dtype (default: %(default)s)")
    m.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    m.add_argument("--seed", type=int, default=0, help="engine seed for requests without their own (default: 0)")
    m.add_argument("--num-threads", type=int, default=None,
                   help="CPU threads for the engine (default: 1 for models under 200 MB, else torch's default)")
    m.add_argument("--enforce-eager", action="store_true",
                   help="run the model's modules step by step instead of the captured step (on a CPU: the whole "
                        "layer stack as one native call; on a CUDA device: CUDA graphs of decode and verify steps); "
                        "results are identical, only slower")
    m.add_argument("--tensor-parallel-size", "-tp", type=int, default=1, metavar="N",
                   help="split the model over N ranks (torch.distributed: NCCL on GPUs, one per rank; gloo on "
                        "CPUs); the engine starts and stops one worker process per extra rank (default: 1)")
    m.add_argument("--attention-backend", default="auto", choices=("auto", "torch", "cpu", "triton", "flashinfer"),
                   help="paged-attention implementation (default: %(default)s = on a CPU: cpu, the native kernels, "
                        "where they built, else torch; on a CUDA device: flashinfer, else triton, else torch, "
                        "whichever imports first; triton and flashinfer need a CUDA device)")
    m.add_argument("--speculative-config", type=speculative_config_arg, default=None, metavar="JSON",
                   help='speculative decoding as a JSON object of SpecConfig fields, e.g. '
                        '\'{"method": "dspark", "model": "DIR", "num_speculative_tokens": 7, "verify": "lagged"}\'. '
                        'Without --model the demo model uses its shipped DSpark drafter; \'{"method": "none"}\' '
                        'turns speculation off')

    m.add_argument("--generation-config", default="auto", choices=("auto", "none"),
                   help="auto: requests that omit temperature/top_p/top_k/min_p get the model's "
                        "generation_config.json values; none: OpenAI defaults (default: %(default)s)")

    e = p.add_argument_group("engine limits")
    e.add_argument("--max-num-seqs", type=int, default=64, help="most sequences per step (default: %(default)s)")
    e.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="most tokens per step (default: %(default)s)")
    e.add_argument("--max-model-len", type=int, default=None,
                   help="context length, prompt + output (default: the model's, capped at 4096)")
    e.add_argument("--block-size", type=int, default=16, help="KV-cache block size in tokens (default: 16)")
    e.add_argument("--num-kv-blocks", type=int, default=None,
                   help="number of KV-cache blocks (default: sized from --kv-cache-memory-gb)")
    e.add_argument("--kv-cache-memory-gb", type=float, default=0.5,
                   help="KV-cache memory when --num-kv-blocks is not given (default: %(default)s)")
    e.add_argument("--no-prefix-caching", "--no-enable-prefix-caching", dest="no_prefix_caching",
                   action="store_true", help="disable automatic prefix caching")
    e.add_argument("--max-waiting", type=int, default=1024,
                   help="most requests waiting for a slot; beyond it requests get 429 (default: %(default)s)")

    s = p.add_argument_group("HTTP server")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    s.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    s.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on /v1 routes (repeat for several keys)")
    s.add_argument("--max-body-bytes", type=int, default=1 << 20,
                   help="largest request body; larger ones get 413 (default: %(default)s)")
    s.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                   help="per-request deadline in seconds, then 504 and abort; 0 disables (default: %(default)s)")
    s.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM, how long in-flight requests may finish (default: %(default)s)")
    s.add_argument("--engine-death-exit-s", type=float, default=2.0, metavar="S",
                   help="when the engine core dies (or freezes: --engine-heartbeat-timeout), its requests get "
                        "errors and /health turns 503; the server exits 1 this many seconds later, for its "
                        "supervisor to restart it (default: %(default)s)")
    s.add_argument("--engine-heartbeat-timeout", type=float, default=10.0, metavar="S",
                   help="a loaded engine core silent for this long is frozen: killed and handled as dead "
                        "(default: %(default)s)")
    s.add_argument("--body-read-timeout", type=float, default=30.0, metavar="S",
                   help="a request body not complete this long after its headers gets 408 (headers themselves: "
                        "10 s; idle keep-alive connections: 5 s) (default: %(default)s)")
    s.add_argument("--max-n", type=int, default=16, help="largest 'n' a request may ask for, <= 16 (default: 16)")
    s.add_argument("--max-logprobs", type=int, default=20,
                   help="largest logprobs/top_logprobs a request may ask for, <= 20 (default: 20)")
    s.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level (default: %(default)s)")
    s.add_argument("--disable-uvicorn-access-log", action="store_true", help="do not log every HTTP request")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    tag = getattr(args, "model_tag", None)
    if tag is not None:
        if args.model is not None and args.model != tag:
            raise ValueError(f"two models given: {tag!r} (positional) and --model {args.model!r}")
        args.model = tag
    names = tuple(args.served_model_name or ())
    sampling_defaults = {}
    if args.generation_config == "auto":
        from sparkserve.assets import demo_model_path

        sampling_defaults = generation_defaults(args.model or demo_model_path())
    spec = with_default_planner(args.speculative_config)
    if spec is None and args.model is None:  # the demo model speculates with its shipped DSpark drafter
        from sparkserve.assets import demo_speculative_config

        spec = demo_speculative_config()
    engine_kwargs = dict(
        model=args.model, tokenizer=args.tokenizer, dtype=args.dtype, device=args.device, seed=args.seed,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
        num_kv_blocks=args.num_kv_blocks, kv_cache_memory_bytes=int(args.kv_cache_memory_gb * (1 << 30)),
        enable_prefix_caching=not args.no_prefix_caching, speculative_config=spec,
        served_model_name=names[0] if names else None, max_waiting=args.max_waiting,
        num_threads=args.num_threads, attention_backend=args.attention_backend, enforce_eager=args.enforce_eager,
        tensor_parallel_size=args.tensor_parallel_size)
    return ServerSettings(host=args.host, port=args.port, model=args.model, tokenizer=args.tokenizer,
                          served_model_names=names, api_keys=tuple(args.api_key or ()),
                          max_body_bytes=args.max_body_bytes, request_timeout_s=args.request_timeout,
                          shutdown_timeout_s=args.shutdown_timeout, body_read_timeout_s=args.body_read_timeout,
                          engine_death_exit_s=args.engine_death_exit_s,
                          engine_heartbeat_timeout_s=args.engine_heartbeat_timeout, max_n=args.max_n,
                          max_logprobs=args.max_logprobs, log_level=args.log_level,
                          access_log=not args.disable_uvicorn_access_log, engine_kwargs=engine_kwargs,
                          sampling_defaults=sampling_defaults)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains (``ServerState.drain``) before stopping."""

    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        state.on_exit = self.request_exit

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        announce = asyncio.ensure_future(self._announce_ready())
        try:
            await super().serve(sockets)
        finally:
            announce.cancel()

    async def _announce_ready(self) -> None:
        client = self.state.client
        log.info("loading %s in the engine core: /ready answers 503 until the 'ready at' line",
                 self.state.settings.model_path)
        await client.ready_event.wait()
        if client.ready:
            c = self.config
            log.info("%s", ready_summary(self.state.settings, client.info, f"http://{c.host}:{c.port}"))

    def request_exit(self, code: int) -> None:
        self.should_exit = True

    def handle_exit(self, sig, frame) -> None:  # runs as the signal handler
        if self.state.draining or self._loop is None or not self.started:
            self.force_exit = self.state.draining
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.state.drain()))


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        preflight(settings)  # every configuration error, once, before the port is bound
        tokenizer = None
        if has_tokenizer(settings.tokenizer_path):
            from sparkserve.models.tokenizer import Tokenizer  # torch-free

            tokenizer = Tokenizer(settings.tokenizer_path)
    except ValueError as e:
        print(f"sparkserve launch: error: {e}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    if settings.sampling_defaults:
        logging.getLogger("sparkserve.server").info(
            "requests that omit them get the model's generation_config sampling: %s (--generation-config none "
            "turns this off)", settings.sampling_defaults)
    from sparkserve.server.app import build_app

    app = build_app(settings, tokenizer)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop=loop, lifespan="on",
                            log_level=settings.log_level, access_log=settings.access_log, log_config=None,
                            http=EnvelopeHttpProtocol, timeout_graceful_shutdown=5, timeout_keep_alive=5,
                            limit_concurrency=LIMIT_CONCURRENCY)
    state = app.state.server
    DrainingServer(config, state).run()
    return state.exit_code
