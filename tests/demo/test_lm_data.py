"""Packing chat documents into rows, assistant-only loss masks, exact loader resumption."""

from sparkserve.train.lm.data import Document, PackedLoader, pack_rows


def _docs():
    return [Document(list(range(10, 10 + n)), [0] * (n // 2) + [1] * (n - n // 2), "math")
            for n in (5, 9, 3, 12, 7, 4, 30, 6, 8, 2, 11)]


def test_pack_rows_keeps_whole_documents_and_masks_padding():
    docs = _docs()
    rows = pack_rows(docs, row_len=16, pad_id=0, order=list(range(len(docs))))
    assert all(len(ids) == 16 == len(mask) for ids, mask in rows)
    packed = sum(sum(1 for t in ids if t) for ids, _ in rows)
    assert packed == sum(len(d.token_ids) for d in docs if len(d.token_ids) <= 16)  # the 30-token doc is dropped
    for ids, mask in rows:
        assert ids[0] == 10  # every row starts with a document
        assert all(m == 0 for t, m in zip(ids, mask) if t == 0)


def test_loader_batches_shift_targets_and_resume_exactly():
    docs = _docs() * 5
    a = PackedLoader(docs, seq_len=15, batch_size=2, pad_id=0, seed=1)
    first = [a.next_batch() for _ in range(40)]  # crosses epoch boundaries
    inputs, targets, mask = first[0]
    assert inputs.shape == targets.shape == mask.shape == (2, 15)
    b = PackedLoader(docs, seq_len=15, batch_size=2, pad_id=0, seed=1)
    for _ in range(3):
        b.next_batch()
    c = PackedLoader(docs, seq_len=15, batch_size=2, pad_id=0, seed=1)
    c.load_state(b.state())
    for want in first[3:]:
        got = c.next_batch()
        assert all((x == y).all() for x, y in zip(want, got))
    assert a.epoch >= 1
