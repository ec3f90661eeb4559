"""Pure-function sampling: the processed distribution, per-request generators, the sampler.

- ``processing.processed_logprobs``: temperature -> top-k -> top-p -> min-p, renormalised (also what
  the speculative verifier scores against).
- ``sampler.Sampler``: one token per row; ``draw_from_probs``/``draw_uniform`` are its randomness.
- ``generators.RequestGenerators``: a ``torch.Generator`` per request id (seeded or engine-seeded).
"""
from sparkserve.sample.generators import RequestGenerators
from sparkserve.sample.metadata import SamplingTensors
from sparkserve.sample.processing import GREEDY_EPS, greedy_logprobs, is_greedy, processed_logprobs
from sparkserve.sample.sampler import (
    SampleOutput,
    Sampler,
    draw_from_probs,
    draw_index,
    draw_indices,
    draw_uniform,
    draw_uniforms,
)

__all__ = [
    "GREEDY_EPS",
    "RequestGenerators",
    "SampleOutput",
    "Sampler",
    "SamplingTensors",
    "draw_from_probs",
    "draw_index",
    "draw_indices",
    "draw_uniform",
    "draw_uniforms",
    "greedy_logprobs",
    "is_greedy",
    "processed_logprobs",
]
