"""Server settings: what the HTTP layer needs, plus the engine's keyword arguments it forwards.

The engine configuration itself (``EngineConfig``) is built inside the engine core process from
``engine_kwargs`` (``sparkserve.engine.args.build_engine_config``), so the API process never
imports the engine or torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DEMO_MODEL_NAME = "sparkserve-demo"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # None: the embedded demo model
    tokenizer: str | None = None
    served_model_names: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 600.0  # 0: no deadline
    shutdown_timeout_s: float = 30.0
    engine_death_exit_s: float = 2.0  # after the engine core dies or freezes: answer 503 this long, then exit 1
    engine_heartbeat_timeout_s: float = 10.0  # no message from a loaded core for this long: frozen
    body_read_timeout_s: float = 30.0  # a request body not complete this long after its headers: 408
    max_n: int = 16
    max_logprobs: int = 20
    log_level: str = "info"
    access_log: bool = True
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # request defaults for omitted sampling fields (temperature, top_p, top_k, min_p); launch fills them
    # from the model's generation_config.json unless --generation-config none
    sampling_defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(not key.strip() for key in self.api_keys):
            raise ValueError("--api-key is empty (an unset environment variable?); give a non-empty key or "
                             "omit --api-key to serve without authentication")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in [1, 65535], got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.request_timeout_s < 0 or self.shutdown_timeout_s < 0 or self.engine_death_exit_s < 0:
            raise ValueError("timeouts must be >= 0")
        if self.engine_heartbeat_timeout_s < 1:
            raise ValueError(f"engine_heartbeat_timeout_s must be >= 1, got {self.engine_heartbeat_timeout_s}")
        if not self.body_read_timeout_s > 0:
            raise ValueError(f"--body-read-timeout must be > 0 seconds, got {self.body_read_timeout_s}")
        if not 1 <= self.max_n <= 16:
            raise ValueError(f"max_n must be in [1, 16], got {self.max_n}")
        if not 0 <= self.max_logprobs <= 20:
            raise ValueError(f"max_logprobs must be in [0, 20], got {self.max_logprobs}")

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names the API answers to; the first one is reported in responses."""
        if self.served_model_names:
            return self.served_model_names
        return (self.model,) if self.model else (DEMO_MODEL_NAME,)

    @property
    def model_path(self) -> str:
        if self.model is not None:
            return self.model
        from sparkserve.assets import demo_model_path

        return demo_model_path()

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.model_path


def has_tokenizer(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model"))


SAMPLING_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p")


def generation_defaults(model_dir: str) -> dict[str, Any]:
    """The model's recommended sampling from ``generation_config.json`` (what a request that omits
    them gets, as with vLLM's ``--generation-config auto``); {} if absent or ``do_sample`` is false."""
    import json

    path = os.path.join(model_dir, "generation_config.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            gen = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e} (--generation-config none skips it)") from None
    if not isinstance(gen, dict) or gen.get("do_sample") is False:
        return {}
    return {k: gen[k] for k in SAMPLING_DEFAULT_FIELDS if isinstance(gen.get(k), (int, float))}
