from sparkserve.scheduler import KVCacheManager

from sched_helpers import make_request


def test_allocate_covers_positions_and_fails_cleanly():
    kv = KVCacheManager(block_size=4, num_blocks=5)  # 4 usable
    request = make_request("a", 10)
    assert kv.allocate_slots(request, 10)
    assert len(kv.block_ids("a")) == 3 and kv.num_free_blocks == 1
    request.num_computed_tokens = 10
    assert kv.allocate_slots(request, 2)  # positions 10, 11 fit in block 3
    assert len(kv.block_ids("a")) == 3
    assert not kv.allocate_slots(request, 7)  # needs 2 more blocks
    assert len(kv.block_ids("a")) == 3 and kv.num_free_blocks == 1
    assert kv.allocate_slots(request, 6)
    assert kv.num_free_blocks == 0 and kv.usage == 1.0


def test_truncate_and_free_in_reverse_order():
    kv = KVCacheManager(block_size=4, num_blocks=8)
    request = make_request("a", 16)
    assert kv.allocate_slots(request, 16)
    table = list(kv.block_ids("a"))
    kv.truncate(request, 9)
    assert kv.block_ids("a") == table[:3] and kv.num_free_blocks == 4
    kv.truncate(request, 12)  # nothing to free
    assert kv.block_ids("a") == table[:3]
    kv.free(request)
    assert kv.block_ids("a") == [] and kv.num_free_blocks == 7
    kv.free(request)  # idempotent


def test_prefix_hit_capped_below_whole_prompt():
    kv = KVCacheManager(block_size=4, num_blocks=16)
    first = make_request("a", 8)
    assert kv.allocate_slots(first, 8)
    first.num_computed_tokens = 8
    kv.cache_full_blocks(first)
    same = make_request("b", 8)  # identical prompt: only 1 block may hit (one token left to compute)
    hit, num_tokens = kv.get_computed_blocks(same)
    assert hit == kv.block_ids("a")[:1] and num_tokens == 4
    longer = make_request("c", 9)
    hit, num_tokens = kv.get_computed_blocks(longer)
    assert hit == kv.block_ids("a") and num_tokens == 8
    assert kv.allocate_slots(longer, 1, hit)
    assert kv.block_ids("c")[:2] == kv.block_ids("a") and len(kv.block_ids("c")) == 3
    assert kv.pool.ref_count(hit[0]) == 2


def test_hit_on_free_cached_blocks_counts_against_free_space():
    kv = KVCacheManager(block_size=4, num_blocks=4)  # 3 usable
    first = make_request("a", 8)
    assert kv.allocate_slots(first, 8)
    first.num_computed_tokens = 8
    kv.cache_full_blocks(first)
    kv.free(first)
    assert kv.num_free_blocks == 3
    second = make_request("b", 12)
    hit, num_tokens = kv.get_computed_blocks(second)
    assert num_tokens == 8
    assert not kv.allocate_slots(second, 4 + 4, hit)  # would need 2 revived hits + 2 new = 4 > 3
    assert kv.num_free_blocks == 3 and kv.pool.ref_count(hit[0]) == 0
    assert kv.allocate_slots(second, 4, hit)
    assert kv.num_free_blocks == 0


def test_prefix_caching_disabled():
    kv = KVCacheManager(block_size=4, num_blocks=8, enable_prefix_caching=False)
    first = make_request("a", 9)
    assert kv.allocate_slots(first, 9)
    first.num_computed_tokens = 9
    kv.cache_full_blocks(first)
    assert kv.pool.num_cached_blocks == 0
    assert kv.get_computed_blocks(make_request("b", 9)) == ([], 0)
