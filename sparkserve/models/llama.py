"""Llama (HF ``LlamaForCausalLM``): no qk-norm, optional attention bias, llama3 RoPE scaling."""
from sparkserve.models.decoder import DecoderForCausalLM


class LlamaForCausalLM(DecoderForCausalLM):
    pass
