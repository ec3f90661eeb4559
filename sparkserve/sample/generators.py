"""Per-request random generators, so a request's samples do not depend on its batch-mates.

A request with ``seed`` gets ``torch.Generator(device).manual_seed(seed)``. A request without one
gets a seed drawn from the engine-level RNG (seeded with ``engine_seed``) the first time it is
asked for, so a whole engine run with a fixed engine seed repeats exactly, provided requests
first reach the sampler in the same order. The generator lives until ``drop`` (call it when a
request finishes, not when it is preempted, so a resumed request continues its stream).

Note: CPU and CUDA generators produce different streams; a seed reproduces per device type.
"""
from __future__ import annotations

import random
from typing import Iterable

import torch

_SEED_MASK = (1 << 64) - 1  # torch seeds are 64-bit


class RequestGenerators:
    """``torch.Generator`` per request id, created on first use."""

    def __init__(self, device: torch.device | str = "cpu", engine_seed: int | None = 0) -> None:
        self.device = torch.device(device)
        self._engine_rng = random.Random(engine_seed)  # None: OS entropy, not reproducible
        self._generators: dict[str, torch.Generator] = {}

    def get(self, request_id: str, seed: int | None = None) -> torch.Generator:
        """The request's generator; ``seed`` is only read when the generator is created."""
        gen = self._generators.get(request_id)
        if gen is None:
            if seed is None:
                seed = self._engine_rng.getrandbits(63)
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(seed) & _SEED_MASK)
            self._generators[request_id] = gen
        return gen

    def drop(self, request_ids: Iterable[str]) -> None:
        """Forget finished requests (unknown ids are ignored)."""
        for request_id in request_ids:
            self._generators.pop(request_id, None)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._generators

    def __len__(self) -> int:
        return len(self._generators)
