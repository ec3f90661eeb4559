import pytest

from sparkserve.scheduler import NULL_BLOCK_ID, BlockPool, NoFreeBlocksError


def test_null_block_is_reserved():
    pool = BlockPool(5)
    assert pool.num_usable_blocks == 4 and pool.num_free_blocks == 4
    block_ids = pool.allocate(4)
    assert NULL_BLOCK_ID not in block_ids and sorted(block_ids) == [1, 2, 3, 4]
    assert pool.usage == 1.0
    with pytest.raises(NoFreeBlocksError):
        pool.allocate(1)
    with pytest.raises(ValueError):
        BlockPool(1)


def test_allocate_too_many_changes_nothing():
    pool = BlockPool(4)
    with pytest.raises(NoFreeBlocksError):
        pool.allocate(4)
    assert pool.num_free_blocks == 3


def test_free_and_double_free():
    pool = BlockPool(4)
    a, b = pool.allocate(2)
    pool.free([a])
    assert pool.ref_count(a) == 0 and pool.num_free_blocks == 2 and pool.usage == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        pool.free([a])


def test_cached_blocks_evicted_lru_uncached_reused_first():
    pool = BlockPool(6)
    blocks = pool.allocate(5)
    for i, block_id in enumerate(blocks[:3]):
        assert pool.cache_block(block_id, bytes([i]) * 32)
    # free order: cached 0, plain 3, cached 1, plain 4, cached 2
    pool.free([blocks[0], blocks[3], blocks[1], blocks[4], blocks[2]])
    assert pool.num_free_blocks == 5 and pool.num_cached_blocks == 3
    # plain blocks first, then cached ones least-recently-freed first
    order = pool.allocate(5)
    assert set(order[:2]) == {blocks[3], blocks[4]}
    assert order[2:] == [blocks[0], blocks[1], blocks[2]]
    assert pool.num_cached_blocks == 0  # all evicted on reuse
    assert pool.lookup(bytes([0]) * 32) is None


def test_touch_revives_a_free_cached_block():
    pool = BlockPool(4)
    (block_id,) = pool.allocate(1)
    key = b"k" * 32
    assert pool.cache_block(block_id, key)
    assert not pool.cache_block(block_id, b"x" * 32)  # already cached
    pool.free([block_id])
    assert pool.lookup(key) == block_id and pool.num_free_blocks == 3
    pool.touch([block_id])
    assert pool.ref_count(block_id) == 1 and pool.num_free_blocks == 2
    pool.touch([block_id])  # shared by a second request
    assert pool.ref_count(block_id) == 2
    assert sorted(pool.allocate(2)) == sorted({1, 2, 3} - {block_id})
    pool.free([block_id, block_id])
    assert pool.ref_count(block_id) == 0 and pool.lookup(key) == block_id


def test_duplicate_hash_keeps_first_block():
    pool = BlockPool(4)
    a, b = pool.allocate(2)
    assert pool.cache_block(a, b"h" * 32)
    assert not pool.cache_block(b, b"h" * 32)
    assert pool.lookup(b"h" * 32) == a and pool.block_hash(b) is None
    with pytest.raises(ValueError):
        pool.cache_block(pool.allocate(1)[0] and 0, b"z" * 32)  # block 0 is never in use


def test_reset_prefix_cache():
    pool = BlockPool(4)
    (a,) = pool.allocate(1)
    pool.cache_block(a, b"h" * 32)
    assert not pool.reset_prefix_cache()  # a block is in use
    pool.free([a])
    assert pool.reset_prefix_cache() and pool.lookup(b"h" * 32) is None and pool.block_hash(a) is None
