"""Write a randomly initialised drafter for a target, in the format ``load_drafter`` reads.

DeepSpec layout (DSPARK.md §1.1-1.2, §3): ``config.json`` is a deep copy of the target's config with
the drafter's overrides; ``model.safetensors`` (bf16) holds ``embed_tokens``/``lm_head`` as copies of
the target's (the tied embedding when the target ties them). Methods:

- ``dspark``: ``Qwen3DSparkModel`` with a Markov head and a confidence head (with markov);
  ``block_size`` = gamma (the anchor row predicts too).
- ``dflash``: DeepSpec DFlash, the same class with ``markov_rank`` 0 and no confidence head.
- ``zlab-dflash``: z-lab ``DFlashDraftModel``: ``dflash_config`` {block_size = gamma + 1,
  mask_token_id, target_layer_ids}; no ``embed_tokens``/``lm_head`` (the target's are used).
- ``eagle3``: ``Qwen3Eagle3Model``, one layer, ``ttt_length`` = gamma.

Initialisation follows HF's ``initializer_range`` (normal, std 0.02 unless the target config says
otherwise; biases 0; norms 1).
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.loader import read_state_dict
from sparkserve.spec_decode.drafters.config import DraftConfig
from sparkserve.spec_decode.drafters.dspark import DSparkDraftModel
from sparkserve.spec_decode.drafters.eagle3 import Eagle3DraftModel
from sparkserve.spec_decode.heads import MARKOV_HEAD_TYPES

INIT_METHODS = ("dspark", "dflash", "zlab-dflash", "eagle3")
QWEN3_VOCAB, QWEN3_MASK_TOKEN = 151936, 151669  # DeepSpec's mask id for the Qwen3 vocabulary


def build_target_layer_ids(num_target_layers: int, num_ids: int | None = None) -> list[int]:
    """Distinct target layers, evenly spaced from 1 to L-3 (DFlash's rule: [1, 9, 17, 25, 33] for 36
    layers, [1, 10, 19, 28, 37] for 40); stretched up to L-2 (never the last layer) when a small
    target has no room for ``num_ids`` = min(5, L-2) distinct ids in 1..L-3."""
    if num_target_layers < 2:
        raise ValueError(f"a target needs at least 2 layers to feed a drafter (has {num_target_layers})")
    top = num_target_layers - 2  # the last allowed id
    n = min(5, num_target_layers - 2) if num_ids is None else num_ids
    n = max(n, 1)
    lo = 1 if top >= n else 0
    if top - lo + 1 < n:
        raise ValueError(f"cannot pick {n} distinct target layers below the last of {num_target_layers}")
    hi = min(max(num_target_layers - 3, lo + n - 1), top)
    if n == 1:
        return [(lo + hi) // 2]
    return [lo + int((i * (hi - lo)) / (n - 1) + 0.5) for i in range(n)]


def default_markov_rank(vocab_size: int) -> int:
    return max(1, min(256, vocab_size // 8))


def init_drafter(method: str, target_dir: str, out_dir: str, num_speculative_tokens: int = 7, seed: int = 0,
                 markov_head_type: str = "vanilla", markov_rank: int | None = None, num_layers: int | None = None,
                 target_layer_ids: list[int] | None = None, mask_token_id: int | None = None,
                 confidence_head: bool = True, init_std: float | None = None) -> str:
    """Write ``out_dir/config.json`` + ``out_dir/model.safetensors``; returns ``out_dir``.

    ``init_std`` overrides the config's ``initializer_range`` (tests use larger weights so that
    random drafters give varied drafts).
    """
    if method not in INIT_METHODS:
        raise ValueError(f"unknown drafter method {method!r}; expected one of {list(INIT_METHODS)}")
    if num_speculative_tokens < 1:
        raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
    if markov_head_type not in MARKOV_HEAD_TYPES:
        raise ValueError(f"unknown markov_head_type {markov_head_type!r}; expected one of {list(MARKOV_HEAD_TYPES)}")
    target = DecoderConfig.from_file(target_dir)
    with open(os.path.join(target_dir, "config.json")) as f:
        raw = json.load(f)
    num_target = target.num_hidden_layers
    ids = list(target_layer_ids) if target_layer_ids is not None else build_target_layer_ids(num_target)
    if any(not -1 <= i <= num_target - 2 for i in ids):
        raise ValueError(f"target_layer_ids {ids} must lie in -1..{num_target - 2} (not the last layer)")
    depth = 1 if method == "eagle3" else (num_layers or 5)
    if method == "eagle3" and num_layers not in (None, 1):
        raise ValueError("Eagle3 drafters have exactly one layer")
    cfg = _draft_config_dict(raw, method, target, ids, depth, num_speculative_tokens, markov_head_type,
                             markov_rank, mask_token_id, confidence_head, target_dir)
    dcfg = DraftConfig.from_dict(cfg)
    model = (Eagle3DraftModel if method == "eagle3" else DSparkDraftModel)(dcfg)
    std = float(raw.get("initializer_range", 0.02)) if init_std is None else init_std
    _randomise(model, std, seed)
    if method != "zlab-dflash":
        _copy_vocab(model, target_dir, target)
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    return out_dir


def _draft_config_dict(raw, method, target, ids, depth, gamma, head_type, rank, mask_id, confidence, target_dir):
    cfg = json.loads(json.dumps(raw))  # deep copy of the target's config
    cfg.pop("quantization_config", None)
    cfg.update(num_target_layers=target.num_hidden_layers, num_hidden_layers=depth, tie_word_embeddings=False,
               layer_types=["full_attention"] * depth, max_window_layers=depth, use_sliding_window=False,
               torch_dtype="bfloat16", target_layer_ids=ids)
    if "dtype" in cfg:
        cfg["dtype"] = "bfloat16"
    if mask_id is None:
        mask_id = QWEN3_MASK_TOKEN if target.vocab_size == QWEN3_VOCAB else target.vocab_size - 1
    if method == "eagle3":
        cfg.update(architectures=["Qwen3Eagle3Model"], ttt_length=gamma, target_model_name_or_path=target_dir)
        return cfg
    if method == "zlab-dflash":
        del cfg["target_layer_ids"]
        cfg.update(architectures=["DFlashDraftModel"],
                   dflash_config={"block_size": gamma + 1, "mask_token_id": mask_id, "target_layer_ids": ids})
        return cfg
    rank = 0 if method == "dflash" else (default_markov_rank(target.vocab_size) if rank is None else rank)
    with_conf = method == "dspark" and confidence
    cfg.update(architectures=["Qwen3DSparkModel"], block_size=gamma, mask_token_id=mask_id, num_anchors=512,
               markov_rank=rank, enable_confidence_head=with_conf)
    if with_conf:
        cfg["confidence_head_with_markov"] = rank > 0
    if rank > 0:
        cfg["markov_head_type"] = head_type
    return cfg


@torch.no_grad()
def _randomise(model: torch.nn.Module, std: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif p.dim() == 1:
            p.fill_(1.0)  # RMSNorm weights
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * std)


@torch.no_grad()
def _copy_vocab(model: torch.nn.Module, target_dir: str, target: DecoderConfig) -> None:
    state = read_state_dict(target_dir)
    embed = state.get("model.embed_tokens.weight")
    head = state.get("lm_head.weight", embed if target.tie_word_embeddings else None)
    if embed is None or head is None:
        raise ValueError(f"{target_dir}: cannot find the target's embed_tokens/lm_head to copy into the drafter")
    model.embed_tokens.weight.copy_(embed)
    model.lm_head.weight.copy_(head)
