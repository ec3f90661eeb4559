"""sparkserve: an LLM serving engine built around DSpark speculative decoding.

Heavy modules (torch) load lazily, so ``sparkserve.server`` can import this package without torch.
"""
__version__ = "0.1.0"

__all__ = ["LLM", "SamplingParams", "__version__"]


def __getattr__(name):
    if name == "LLM":
        from sparkserve.engine.llm import LLM

        return LLM
    if name == "SamplingParams":
        from sparkserve.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'sparkserve' has no attribute {name!r}")
