from sparkserve.scheduler.prefix_cache import ROOT_HASH, extend_block_hashes, hash_block_tokens
from sparkserve.scheduler.token_view import token_slice

from sched_helpers import make_request


def test_hash_is_deterministic_and_chained():
    h0 = hash_block_tokens(None, [1, 2, 3, 4])
    assert h0 == hash_block_tokens(ROOT_HASH, [1, 2, 3, 4]) and len(h0) == 32
    assert h0.hex() == hash_block_tokens(None, (1, 2, 3, 4)).hex()
    assert h0 != hash_block_tokens(None, [1, 2, 3, 5])
    assert hash_block_tokens(h0, [5, 6, 7, 8]) != hash_block_tokens(None, [5, 6, 7, 8])
    assert hash_block_tokens(None, [-1, 2**40]) != hash_block_tokens(None, [2**40, -1])


def test_extend_hashes_full_blocks_only_and_incrementally():
    request = make_request("r", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    request.output_token_ids = [10, 11, 12]
    hashes = extend_block_hashes([], request, 4, 2)
    assert hashes == [hash_block_tokens(None, [1, 2, 3, 4]), hash_block_tokens(hashes[0], [5, 6, 7, 8])]
    same = extend_block_hashes(hashes, request, 4, 3)
    assert same is hashes and hashes[2] == hash_block_tokens(hashes[1], [9, 10, 11, 12])
    try:
        extend_block_hashes(hashes, request, 4, 4)
    except ValueError:
        pass
    else:
        raise AssertionError("hashing a partial block must fail")


def test_token_slice_spans_prompt_and_output():
    request = make_request("r", [1, 2, 3])
    request.output_token_ids = [4, 5]
    for start in range(6):
        for end in range(start, 6):
            assert token_slice(request, start, end) == request.all_token_ids[start:end]
