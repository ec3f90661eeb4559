"""Qwen3 dense (HF ``Qwen3ForCausalLM``): per-head RMSNorm on q and k before RoPE, GQA, neox RoPE."""
from sparkserve.models.decoder import DecoderForCausalLM


class Qwen3ForCausalLM(DecoderForCausalLM):
    pass
