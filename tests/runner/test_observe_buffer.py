"""Deferred drafter observes (draft gate off) leave the drafter's context cache exactly as in-order
observes would, including slots written twice (rewritten rejected drafts, reused blocks)."""
import torch

from sparkserve.runner.observe_buffer import ObserveBuffer, newest_row_per_slot


class SlotCache:
    """A row-wise proposer stand-in: writes each row's features to its slot, skipping padding."""

    def __init__(self, num_slots: int, width: int):
        self.cache = torch.zeros(num_slots, width)
        self.calls = 0

    def observe(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        self.calls += 1
        keep = slot_mapping >= 0
        self.cache[slot_mapping[keep]] = features[keep] + next_token_ids[keep, None]


def step(gen, n, num_slots):
    feats = torch.randn(n, 4, generator=gen)
    slots = torch.randint(-1, num_slots, (n,), generator=gen)
    slots[slots >= 0] = torch.randperm(num_slots, generator=gen)[: int((slots >= 0).sum())]  # distinct per step
    return feats, torch.zeros(n, dtype=torch.long), torch.arange(n), slots, torch.randint(-1, 9, (n,), generator=gen)


def test_deferred_equals_in_order():
    gen = torch.Generator().manual_seed(0)
    direct, deferred = SlotCache(24, 4), SlotCache(24, 4)
    buf = ObserveBuffer(deferred, max_rows=10_000)
    for _ in range(30):  # 30 steps of up to 8 rows: many slots written several times
        args = step(gen, int(torch.randint(1, 9, (1,), generator=gen)), 24)
        direct.observe(*args)
        buf.defer(*args)
    assert len(buf) > 24
    buf.flush()
    assert deferred.calls == 1 and len(buf) == 0
    assert torch.equal(direct.cache, deferred.cache)


def test_buffer_flushes_at_its_row_cap():
    gen = torch.Generator().manual_seed(1)
    target = SlotCache(64, 4)
    buf = ObserveBuffer(target, max_rows=16)
    for _ in range(5):
        buf.defer(*step(gen, 6, 64))
    assert target.calls == 1 and len(buf) == 12  # flushed once, at 18 rows


def test_newest_row_per_slot():
    slots = torch.tensor([3, 5, -1, 3, 7, 5, -1, 3])
    assert newest_row_per_slot(slots).tolist() == [2, 4, 5, 6, 7]
