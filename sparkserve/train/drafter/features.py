"""The frozen target inside drafter training: residual features and distributions, online or cached.

For a padded batch of whole sequences the target runs one dense causal forward and returns
- ``features`` [B, S, n*H]: the residual stream after each of ``target_layer_ids`` (DSPARK.md §1.3,
  the same capture serving hands to ``Proposer.observe``), concatenated in that order;
- ``logits`` [B, S, V] fp32: ``lm_head(final-normed hidden)``, from which the losses take
  p_t = softmax(logits) (skipped when a method needs no target distribution: DFlash).

Online is the default (no disk, and cheap next to the drafter for small targets). ``FeatureCache``
stores features plus the final-normed hidden state per sample (``shard-rR-XXXXX.safetensors`` keyed
``{sample}.features`` / ``{sample}.hidden``, an ``index-rR.json`` per writer rank and a
``manifest.json``), in ``dtype`` (bf16 by default: what DeepSpec caches); logits are recomputed
from the cached hidden state with the target's head, so a cache costs (n+1)*H values per token.
"""
from __future__ import annotations

import glob
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sparkserve.attention.base import DenseCausalContext
from sparkserve.layers.linear import input_dtype


class TargetFeatures:
    def __init__(self, target, layer_ids: tuple[int, ...], need_logits: bool = True,
                 cache: "FeatureCache | None" = None):
        self.target, self.layer_ids, self.need_logits, self.cache = target, tuple(layer_ids), need_logits, cache

    @torch.no_grad()
    def hidden_and_features(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, S] -> (final-normed hidden [B, S, H], features [B, S, n*H])."""
        b, s = input_ids.shape
        positions = torch.arange(s, device=input_ids.device).repeat(b)
        ctx = DenseCausalContext(b, s, self.target.scale)
        hidden, feats = self.target(input_ids.reshape(-1), positions, ctx, self.layer_ids)
        return hidden.view(b, s, -1), feats.view(b, s, -1)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, sample_ids: list[int] | None = None):
        """-> (features [B, S, n*H] fp32, logits [B, S, V] fp32 or None)."""
        if self.cache is not None and sample_ids is not None:
            hidden, feats = self.cache.load(sample_ids, input_ids.shape[1], input_ids.device)
        else:
            hidden, feats = self.hidden_and_features(input_ids)
        logits = None
        if self.need_logits:
            head = self.target.lm_head
            logits = head(hidden.to(input_dtype(head))).float()
        return feats.float(), logits


class FeatureCache:
    """On-disk target features for a fixed dataset (module docstring)."""

    def __init__(self, path: str, identity: dict, dtype: torch.dtype = torch.bfloat16):
        self.path, self.dtype = path, dtype
        os.makedirs(path, exist_ok=True)
        manifest = os.path.join(path, "manifest.json")
        identity = {**identity, "dtype": str(dtype).replace("torch.", "")}
        if os.path.exists(manifest):
            with open(manifest) as f:
                saved = json.load(f)
            if saved != identity:
                raise ValueError(f"feature cache {path} was built for {saved}, not {identity}: use another directory")
        else:
            tmp = manifest + ".tmp"
            with open(tmp, "w") as f:
                json.dump(identity, f, indent=1)
            os.replace(tmp, manifest)
        self.location: dict[int, str] = {}
        self._handles: dict[str, object] = {}

    @staticmethod
    def estimate_bytes(num_tokens: int, num_layers: int, hidden_size: int, dtype: torch.dtype) -> int:
        return num_tokens * (num_layers + 1) * hidden_size * dtype.itemsize

    def refresh(self) -> None:
        self.location = {}
        for idx in sorted(glob.glob(os.path.join(self.path, "index-r*.json"))):
            with open(idx) as f:
                self.location.update({int(k): v for k, v in json.load(f).items()})

    def build(self, dataset, features: TargetFeatures, rank: int = 0, world: int = 1, batch_size: int = 8,
              shard_samples: int = 256, log=print) -> None:
        """Compute this rank's missing samples (i % world == rank), ``shard_samples`` per shard."""
        self.refresh()
        todo = [i for i in range(len(dataset)) if i % world == rank and i not in self.location]
        own_index = os.path.join(self.path, f"index-r{rank}.json")
        own = {}
        if os.path.exists(own_index):
            with open(own_index) as f:
                own = json.load(f)
        num_shards = len(glob.glob(os.path.join(self.path, f"shard-r{rank}-*.safetensors")))
        device = next(features.target.parameters()).device
        for start in range(0, len(todo), shard_samples):
            chunk, tensors = todo[start:start + shard_samples], {}
            for b in range(0, len(chunk), batch_size):
                ids = [dataset[i][0] for i in chunk[b:b + batch_size]]
                batch = torch.zeros(len(ids), max(len(x) for x in ids), dtype=torch.long)
                for r, x in enumerate(ids):
                    batch[r, :len(x)] = x
                hidden, feats = features.hidden_and_features(batch.to(device))
                for r, i in enumerate(chunk[b:b + batch_size]):
                    n = len(ids[r])
                    tensors[f"{i}.features"] = feats[r, :n].to(self.dtype).cpu().contiguous()
                    tensors[f"{i}.hidden"] = hidden[r, :n].to(self.dtype).cpu().contiguous()
            name = f"shard-r{rank}-{num_shards:05d}.safetensors"
            num_shards += 1
            save_file(tensors, os.path.join(self.path, name))
            own.update({str(i): name for i in chunk})
            with open(own_index + ".tmp", "w") as f:
                json.dump(own, f)
            os.replace(own_index + ".tmp", own_index)
            log(f"feature cache: rank {rank} wrote {name} ({start + len(chunk)}/{len(todo)} samples)")
        self.refresh()

    def load(self, sample_ids: list[int], seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (hidden [B, S, H], features [B, S, n*H]) right-padded with zeros to ``seq_len``."""
        hs, fs = [], []
        for i in sample_ids:
            name = self.location.get(i)
            if name is None:
                raise KeyError(f"sample {i} is not in the feature cache {self.path}")
            if name not in self._handles:
                self._handles[name] = safe_open(os.path.join(self.path, name), "pt")
            f = self._handles[name]
            hs.append(f.get_tensor(f"{i}.hidden"))
            fs.append(f.get_tensor(f"{i}.features"))

        def pad(ts):
            out = torch.zeros(len(ts), seq_len, ts[0].shape[-1], dtype=torch.float32)
            for r, t in enumerate(ts):
                out[r, :len(t)] = t.float()
            return out.to(device)

        return pad(hs), pad(fs)
