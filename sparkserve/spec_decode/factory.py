"""Build the drafter a SpecConfig asks for (None when speculation is off)."""
from __future__ import annotations

import logging

from sparkserve.config import SpecConfig

log = logging.getLogger("sparkserve.spec_decode")


def build_proposer(spec: SpecConfig, target_model, num_blocks: int, block_size: int,
                   attention_backend: str = "auto"):
    """Returns (proposer or None, gamma). Errors name what is wrong with the config or checkpoint.
    ``attention_backend``: the target's backend name; a model drafter attends through it too."""
    if spec.method == "none":
        return None, 0
    if spec.method == "ngram":
        from sparkserve.spec_decode.drafters.ngram import NgramProposer

        gamma = spec.num_speculative_tokens or 4
        return NgramProposer(gamma, max_ngram=spec.max_ngram, min_ngram=spec.min_ngram), gamma
    if not spec.model:
        raise ValueError(f"speculative method {spec.method!r} needs a drafter checkpoint: set \"model\"")
    from sparkserve.spec_decode.checkpoint import load_drafter

    proposer = load_drafter(spec.model, target_model, method=spec.method, num_blocks=num_blocks,
                            block_size=block_size, attention_backend=attention_backend, fuse=True)
    gamma = proposer.num_speculative_tokens
    if spec.num_speculative_tokens:
        if spec.num_speculative_tokens > gamma:
            raise ValueError(f"num_speculative_tokens {spec.num_speculative_tokens} exceeds what the "
                             f"{spec.method} drafter at {spec.model} drafts per step ({gamma})")
        gamma = spec.num_speculative_tokens
    log.info("speculative decoding: %s drafter %s, gamma=%d", spec.method, spec.model, gamma)
    return proposer, gamma
