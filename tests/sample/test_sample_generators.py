"""RequestGenerators: seeded, engine-seeded and dropped generators."""
from __future__ import annotations

import torch

from sparkserve.sample import RequestGenerators


def stream(gen: torch.Generator, n: int = 8) -> list[float]:
    return torch.rand(n, generator=gen).tolist()


def test_same_request_same_generator_and_seed_only_read_once():
    gens = RequestGenerators(engine_seed=0)
    g = gens.get("a", seed=5)
    assert gens.get("a", seed=123) is g and gens.get("a") is g
    assert "a" in gens and len(gens) == 1


def test_seeded_request_ignores_engine_seed_and_order():
    one = RequestGenerators(engine_seed=1)
    one.get("x")
    two = RequestGenerators(engine_seed=2)
    assert stream(one.get("a", seed=42)) == stream(two.get("b", seed=42))
    assert stream(RequestGenerators().get("c", seed=42)) == stream(torch.Generator().manual_seed(42))


def test_unseeded_requests_follow_the_engine_seed():
    def run(engine_seed):
        gens = RequestGenerators(engine_seed=engine_seed)
        return [stream(gens.get(rid)) for rid in ["r0", "r1", "r2"]]

    assert run(7) == run(7)
    assert run(7) != run(8)
    first = run(7)
    assert first[0] != first[1] != first[2]


def test_drop_forgets_and_recreates():
    gens = RequestGenerators(engine_seed=0)
    g = gens.get("a", seed=3)
    stream(g)
    gens.drop(["a", "never-seen"])
    assert "a" not in gens and len(gens) == 0
    fresh = gens.get("a", seed=3)
    assert fresh is not g and stream(fresh) == stream(torch.Generator().manual_seed(3))


def test_large_and_negative_seeds_wrap_to_64_bits():
    """Seeds are taken modulo 2**64 (torch's seed range): -1 and 2**64 - 1 give one stream, 2**70 + 5
    gives seed 5's stream."""
    gens = RequestGenerators()
    neg, big, top = (stream(gens.get(rid, seed=seed)) for rid, seed in [("neg", -1), ("big", 2**70 + 5),
                                                                         ("max", 2**64 - 1)])
    assert neg == top == stream(torch.Generator().manual_seed(2**64 - 1))
    assert big == stream(torch.Generator().manual_seed(5)) != neg
