"""Decoder-LM hyper-parameters read from / written to a Hugging Face ``config.json``.

Handles both the classic ``rope_theta``/``rope_scaling`` fields and transformers>=5's
``rope_parameters`` dict.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field


REQUIRED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def read_config_json(file: str, missing_message: str) -> dict:
    """A model's config.json as a dict; ValueError naming the file when missing, invalid or incomplete."""
    try:
        with open(file) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ValueError(missing_message) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    for key in REQUIRED_FIELDS:
        if key not in raw:
            raise ValueError(f"{file} lacks required field {key!r}")
    return raw


@dataclass
class DecoderConfig:
    """The fields a Qwen3/Llama-style decoder needs; ``extra`` keeps everything else verbatim."""

    architectures: list[str] = field(default_factory=lambda: ["Qwen3ForCausalLM"])
    model_type: str = "qwen3"
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    torch_dtype: str = "bfloat16"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act not in ("silu", "swish"):
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r} (only silu)")

    @property
    def architecture(self) -> str:
        return self.architectures[0] if self.architectures else ""

    @property
    def qk_norm(self) -> bool:
        return self.model_type.startswith("qwen3") or self.architecture.startswith("Qwen3")

    @classmethod
    def from_dict(cls, raw: dict) -> "DecoderConfig":
        raw = dict(raw)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        rope = raw.pop("rope_parameters", None)
        if isinstance(rope, dict):
            raw.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
            if rope.get("rope_type", "default") != "default":
                raw.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        if "torch_dtype" not in raw and "dtype" in raw:
            raw["torch_dtype"] = raw.pop("dtype")
        if "rope_theta" not in raw:
            raw["rope_theta"] = 10000.0
        kwargs = {k: raw.pop(k) for k in list(raw) if k in known}
        return cls(**kwargs, extra=raw)

    @classmethod
    def from_file(cls, path: str) -> "DecoderConfig":
        if not os.path.exists(path):
            raise ValueError(f"model path {path!r} does not exist (not a directory)")
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        return cls.from_dict(read_config_json(file, f"no config.json in {path!r}: not a Hugging Face model directory"))

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.pop("rope_scaling")
        d["rope_parameters"] = {"rope_theta": self.rope_theta, "rope_type": "default", **(self.rope_scaling or {})}
        d["rope_theta"] = self.rope_theta  # older transformers read this
        if self.qk_norm:
            d.pop("mlp_bias")
            n = self.num_hidden_layers
            extra = {"layer_types": ["full_attention"] * n, "use_sliding_window": False,
                     "sliding_window": None, "max_window_layers": n, **extra}
        return {**d, **extra}

    def save(self, path: str) -> None:
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
