"""Token data for causal-LM training: chat documents packed into fixed-length rows.

A document is one conversation rendered with the ChatML template; only assistant tokens (the response
and its closing `<|im_end|>`) carry loss. Rows hold whole documents, each starting at a row boundary
(so positions match serving, where a conversation starts at position 0), padded at the end.

The row order of epoch e is a pure function of (seed, e), and a loader's position is two integers,
so training resumes exactly from a checkpoint without saving any generator state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Document:
    """token_ids [n] and loss_mask [n] (1 where the token is a training target)."""

    token_ids: list[int]
    loss_mask: list[int]
    domain: str


def encode_chat(tokenizer, prompt_text: str, response_text: str, domain: str) -> Document:
    """`prompt_text` is the rendered user turn up to the assistant header; `response_text` ends with EOS.

    They are encoded separately, exactly as serving encodes a prompt and then appends generated tokens.
    """
    prompt_ids = tokenizer.encode(prompt_text).ids
    response_ids = tokenizer.encode(response_text).ids
    return Document(prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids), domain)


def pack_rows(docs: list[Document], row_len: int, pad_id: int, order: list[int],
              lookahead: int = 64) -> list[tuple[list[int], list[int]]]:
    """Greedily pack whole documents (in `order`) into rows of `row_len` tokens.

    When the next document doesn't fit, the first of the following `lookahead` documents that fits
    fills the gap; the rest of a row is padding (mask 0). Documents longer than a row are skipped.
    """
    pending = [i for i in order if len(docs[i].token_ids) <= row_len]
    rows: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    mask: list[int] = []
    while pending:
        room = row_len - len(ids)
        pick = next((j for j, i in enumerate(pending[:lookahead]) if len(docs[i].token_ids) <= room), None)
        if pick is None:
            rows.append((ids + [pad_id] * room, mask + [0] * room))
            ids, mask = [], []
            continue
        doc = docs[pending.pop(pick)]
        ids += doc.token_ids
        mask += doc.loss_mask
    if ids:
        room = row_len - len(ids)
        rows.append((ids + [pad_id] * room, mask + [0] * room))
    return rows


class PackedLoader:
    """Batches of packed rows, epoch after epoch; `state()`/`load_state()` give exact resumption.

    Each batch is (input_ids [B, S], target_ids [B, S], loss_mask [B, S]) with S = seq_len: a row
    holds S + 1 tokens and targets are inputs shifted by one. A partial last batch of an epoch is
    dropped.
    """

    def __init__(self, docs: list[Document], seq_len: int, batch_size: int, pad_id: int, seed: int):
        self.docs, self.seq_len, self.batch_size, self.pad_id, self.seed = docs, seq_len, batch_size, pad_id, seed
        self.epoch, self.row = 0, 0
        self._rows_epoch: int | None = None
        self._rows: torch.Tensor | None = None  # [num_rows, 2, S + 1]

    def _epoch_rows(self) -> torch.Tensor:
        if self._rows_epoch != self.epoch:
            order = list(range(len(self.docs)))
            random.Random(f"{self.seed}-epoch-{self.epoch}").shuffle(order)
            rows = pack_rows(self.docs, self.seq_len + 1, self.pad_id, order)
            self._rows = torch.tensor([[ids, mask] for ids, mask in rows], dtype=torch.long)
            self._rows_epoch = self.epoch
            if len(self._rows) < self.batch_size:
                raise ValueError(f"only {len(self._rows)} rows of {self.seq_len + 1} tokens; "
                                 f"batch size {self.batch_size} needs more data")
        return self._rows

    def rows_per_epoch(self) -> int:
        return len(self._epoch_rows())

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self._epoch_rows()
        if self.row + self.batch_size > len(rows):
            self.epoch, self.row = self.epoch + 1, 0
            rows = self._epoch_rows()
        batch = rows[self.row:self.row + self.batch_size]
        self.row += self.batch_size
        ids, mask = batch[:, 0], batch[:, 1]
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), mask[:, 1:].contiguous()

    def state(self) -> dict:
        return {"epoch": self.epoch, "row": self.row}

    def load_state(self, state: dict) -> None:
        self.epoch, self.row = int(state["epoch"]), int(state["row"])


def fixed_batches(docs: list[Document], seq_len: int, batch_size: int, pad_id: int):
    """Deterministic, unshuffled batches over `docs` (for evaluation): yields (inputs, targets, mask)."""
    rows = pack_rows(docs, seq_len + 1, pad_id, list(range(len(docs))))
    for start in range(0, len(rows), batch_size):
        t = torch.tensor(rows[start:start + batch_size], dtype=torch.long)
        yield t[:, 0, :-1], t[:, 0, 1:], t[:, 1, 1:]
