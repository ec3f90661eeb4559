"""Reading regenerated data back (``data.py`` layout) and the epoch sampler of drafter training.

Samples are whole conversations starting at position 0 (no packing: a drafter's positions and
context must look like serving's). The sampler's order in epoch e is a pure function of (seed, e)
and its position is two integers, so training resumes exactly without saving generator state; the
global batch it yields is split across data-parallel ranks by the trainer.
"""
from __future__ import annotations

import json
import os
import random

import torch
from safetensors import safe_open

from sparkserve.train.drafter.blocks import anchor_candidates


class TokenDataset:
    """All samples of a data directory in memory: ``self[i]`` -> (input_ids [S] long, loss_mask [S] long).

    Samples are cut to ``max_length`` tokens; those left with no anchor candidate (two consecutive
    loss tokens) or fewer than ``min_loss_tokens`` loss tokens are dropped.
    """

    def __init__(self, data_dir: str, max_length: int = 2048, min_loss_tokens: int = 2):
        path = os.path.join(data_dir, "index.json")
        if not os.path.exists(path):
            raise ValueError(f"no index.json in {data_dir!r}: generate data with `sparkserve train data` first")
        with open(path) as f:
            self.index = json.load(f)
        self.keys: list[str] = []
        self.samples: list[tuple[torch.Tensor, torch.Tensor]] = []
        for shard in self.index["shards"]:
            with safe_open(os.path.join(data_dir, shard["file"]), "pt") as f:
                keys = json.loads(f.metadata()["keys"])
                ids, mask, offsets = (f.get_tensor(n) for n in ("input_ids", "loss_mask", "offsets"))
            for j, key in enumerate(keys):
                lo, hi = int(offsets[j]), min(int(offsets[j + 1]), int(offsets[j]) + max_length)
                m = mask[lo:hi].long()
                if int(m.sum()) < min_loss_tokens or anchor_candidates(m).numel() == 0:
                    continue
                self.keys.append(key)
                self.samples.append((ids[lo:hi].long(), m))
        if not self.samples:
            raise ValueError(f"{data_dir}: no usable samples (each needs >= {min_loss_tokens} loss tokens)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.samples[i]

    @property
    def num_tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.samples)


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest: (input_ids [B, S], loss_mask [B, S]); padding has mask 0."""
    s = max(len(ids) for ids, _ in samples)
    ids = torch.full((len(samples), s), pad_id, dtype=torch.long)
    mask = torch.zeros(len(samples), s, dtype=torch.long)
    for b, (i, m) in enumerate(samples):
        ids[b, :len(i)] = i
        mask[b, :len(m)] = m
    return ids, mask


class EpochSampler:
    """Global batches of sample indices, epoch after epoch (a partial last batch is dropped)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        if batch_size > num_samples:
            raise ValueError(f"global batch size {batch_size} exceeds the {num_samples} usable samples")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.epoch, self.offset = 0, 0
        self._order_epoch, self._order = None, []

    def _epoch_order(self) -> list[int]:
        if self._order_epoch != self.epoch:
            self._order = list(range(self.num_samples))
            random.Random(f"{self.seed}-drafter-epoch-{self.epoch}").shuffle(self._order)
            self._order_epoch = self.epoch
        return self._order

    def next_batch(self) -> list[int]:
        if self.offset + self.batch_size > self.num_samples:
            self.epoch, self.offset = self.epoch + 1, 0
        batch = self._epoch_order()[self.offset:self.offset + self.batch_size]
        self.offset += self.batch_size
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
