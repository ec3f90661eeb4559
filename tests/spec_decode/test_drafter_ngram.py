"""Prompt-lookup n-gram drafting."""
import random

from sparkserve.spec_decode.drafters.ngram import NgramProposer, ngram_lookup
from sparkserve.spec_decode.types import ProposeRequest
from sparkserve.step import SamplingMeta


def brute_force(tokens, num, max_n, min_n):
    for n in range(max_n, min_n - 1, -1):
        if len(tokens) < n + 1:
            continue
        suffix = tokens[-n:]
        for j in range(len(tokens) - 2, n - 2, -1):  # match ends at j < N-1, most recent first
            if tokens[j - n + 1:j + 1] == suffix:
                return tokens[j + 1:j + 1 + num]
    return []


def test_longest_then_most_recent_match():
    seq = [1, 2, 3, 9, 9, 5, 2, 3, 7, 7, 1, 2, 3]
    # suffix [1,2,3] occurs at 0..2 -> continue with 9, 9, 5
    assert ngram_lookup(seq, 3) == [9, 9, 5]
    # only the bigram [2, 3] recurs (most recent at 6..7) -> 7, 7
    assert ngram_lookup([4, 2, 3, 8, 2, 3, 7, 7, 0, 2, 3], 2) == [7, 7]


def test_no_match_short_and_truncated():
    assert ngram_lookup([1, 2, 3, 4], 3) == []
    assert ngram_lookup([5], 3) == []
    assert ngram_lookup([1, 2, 1, 2], 5) == [1, 2]  # continuation stops at the end of the sequence
    assert ngram_lookup([1, 2, 1, 2], 0) == []
    assert ngram_lookup([3, 1, 4, 1], 2, min_ngram=2) == []  # unigram match only
    assert ngram_lookup([3, 1, 4, 1], 2, min_ngram=1) == [4, 1]


def test_matches_brute_force():
    rng = random.Random(0)
    for _ in range(300):
        seq = [rng.randrange(4) for _ in range(rng.randrange(1, 40))]
        num, max_n, min_n = rng.randrange(1, 6), rng.randrange(1, 5), 1
        min_n = rng.randrange(1, max_n + 1)
        assert ngram_lookup(seq, num, max_n, min_n) == brute_force(seq, num, max_n, min_n), (seq, num, max_n, min_n)


def test_proposer_caps_and_is_deterministic():
    prop = NgramProposer(num_speculative_tokens=3)
    assert prop.target_layer_ids == () and prop.num_speculative_tokens == 3
    seq = [1, 2, 3, 4, 5, 6, 1, 2]
    reqs = [ProposeRequest("a", 2, 7, seq, [], SamplingMeta(), None, 7),
            ProposeRequest("b", 2, 7, seq, [], SamplingMeta(temperature=1.0), None, 1)]
    prop.observe(None, None, None, None, None)
    a, b = prop.propose(reqs)
    assert a.token_ids == [3, 4, 5] and a.probs is None and a.confidences is None
    assert b.token_ids == [3]
