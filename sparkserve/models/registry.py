"""Maps ``config.json``'s ``architectures[0]`` to a model class."""
from __future__ import annotations

from sparkserve.models.hf_config import DecoderConfig

_ARCHITECTURES = {
    "Qwen3ForCausalLM": ("sparkserve.models.qwen3", "Qwen3ForCausalLM"),
    "LlamaForCausalLM": ("sparkserve.models.llama", "LlamaForCausalLM"),
}


def supported_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def model_class(cfg: DecoderConfig):
    arch = cfg.architecture
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unsupported architecture {arch!r}; sparkserve supports {supported_architectures()}")
    import importlib

    module, name = _ARCHITECTURES[arch]
    return getattr(importlib.import_module(module), name)
