"""A drafter checkpoint's ``config.json``: which layout it is and the fields the drafters read.

Three layouts are supported (DSPARK.md §1.1, §2, §3):

- ``dspark``: DeepSpec ``Qwen3DSparkModel`` (DSpark, and DeepSpec's DFlash = markov_rank 0 and no
  confidence head). Block ``[anchor, M x (B-1)]``; all B rows predict (row k -> position s+k+1).
- ``zlab-dflash``: z-lab ``DFlashDraftModel``. No ``embed_tokens``/``lm_head`` in the checkpoint (the
  target's are used); ``block_size``/``mask_token_id``/``target_layer_ids`` in ``dflash_config`` or at
  the top level; only mask rows predict (row j >= 1 -> position s+j), so B-1 drafts.
- ``eagle3``: DeepSpec ``Qwen3Eagle3Model``, one 2H-wide layer, chain drafting for ``ttt_length`` steps.

Every other field (hidden size, heads, head_dim, RoPE, eps, vocab) is the target's, copied into the
draft config; ``model`` holds them as a ``DecoderConfig`` whose ``num_hidden_layers`` is the draft depth.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparkserve.models.hf_config import DecoderConfig

KINDS = ("dspark", "zlab-dflash", "eagle3")
# ``method`` names a caller may ask for -> the layouts that satisfy it
METHOD_KINDS = {"dspark": ("dspark",), "dflash": ("dspark", "zlab-dflash"), "zlab-dflash": ("zlab-dflash",),
                "eagle3": ("eagle3",), "auto": KINDS, None: KINDS}


@dataclass
class DraftConfig:
    kind: str  # one of KINDS
    model: DecoderConfig  # dims; num_hidden_layers = draft layers
    target_layer_ids: tuple[int, ...]
    block_size: int = 0  # dspark / zlab-dflash: rows per block (anchor + masks)
    mask_token_id: int | None = None
    markov_rank: int = 0
    markov_head_type: str = "vanilla"
    enable_confidence_head: bool = False
    confidence_head_with_markov: bool = False
    ttt_length: int = 7  # eagle3: chain length
    input_embedding_scale: float = 1.0  # z-lab only
    output_multiplier: float = 1.0  # z-lab only
    final_logit_softcapping: float | None = None  # z-lab only
    layer_types: tuple[str, ...] = ()  # per draft layer: full_attention | sliding_attention
    sliding_window: int | None = None
    is_causal: bool | None = None  # z-lab: causal among block rows (None: sliding layers are causal)

    @property
    def num_layers(self) -> int:
        return self.model.num_hidden_layers

    @property
    def num_draft_tokens(self) -> int:
        """Drafts one propose yields per request at most (gamma)."""
        if self.kind == "eagle3":
            return self.ttt_length
        return self.block_size if self.kind == "dspark" else self.block_size - 1

    def layer_attention(self, layer_idx: int) -> tuple[bool, int | None]:
        """(causal among block rows, sliding window or None) of a draft layer."""
        kind = self.layer_types[layer_idx] if layer_idx < len(self.layer_types) else "full_attention"
        window = self.sliding_window if kind == "sliding_attention" else None
        if self.kind != "zlab-dflash":
            return False, window  # DeepSpec attends with no mask among block rows
        causal = kind == "sliding_attention" if self.is_causal is None else bool(self.is_causal)
        return causal, window

    @classmethod
    def from_dict(cls, raw: dict, state_keys: set[str] | None = None, method: str | None = None,
                  source: str = "config.json") -> "DraftConfig":
        """Detect the layout (architecture name, ``dflash_config``, present keys) and parse it."""
        kind = detect_kind(raw, state_keys or set(), source)
        allowed = METHOD_KINDS.get(method)
        if allowed is None:
            raise ValueError(f"unknown drafter method {method!r}; expected one of "
                             f"{sorted(k for k in METHOD_KINDS if k)}")
        if kind not in allowed:
            raise ValueError(f"{source}: method {method!r} was requested but the checkpoint is a {kind} drafter "
                             f"(architectures={raw.get('architectures')})")
        model = DecoderConfig.from_dict(raw)
        extra = model.extra
        sub = extra.get("dflash_config") or {}

        def field(name, default=None):
            return sub.get(name, extra.get(name, default))

        ids = field("target_layer_ids")
        if ids is None:
            raise ValueError(f"{source} lacks target_layer_ids (the target layers the drafter reads)")
        cfg = cls(kind=kind, model=model, target_layer_ids=tuple(int(i) for i in ids),
                  layer_types=tuple(extra.get("layer_types") or ()), sliding_window=extra.get("sliding_window"),
                  is_causal=extra.get("is_causal"))
        if kind == "eagle3":
            cfg.ttt_length = int(extra.get("ttt_length", 7))
            if state_keys and not any(k.startswith("layers.1.") for k in state_keys):
                model.num_hidden_layers = 1  # the weights decide, whatever depth the copied config says
            return cfg
        block_size = field("block_size", 16 if kind == "zlab-dflash" else None)
        if block_size is None:
            raise ValueError(f"{source} lacks block_size")
        cfg.block_size = int(block_size)
        mask = field("mask_token_id")
        if mask is None:
            raise ValueError(f"{source} lacks mask_token_id")
        cfg.mask_token_id = int(mask)
        if kind == "zlab-dflash":
            cfg.input_embedding_scale = float(field("input_embedding_scale", 1.0))
            cfg.output_multiplier = float(field("output_multiplier", 1.0))
            cap = field("final_logit_softcapping")
            cfg.final_logit_softcapping = float(cap) if cap else None
            return cfg
        cfg.markov_rank = int(extra.get("markov_rank", 0) or 0)
        cfg.markov_head_type = str(extra.get("markov_head_type", "vanilla"))
        cfg.enable_confidence_head = bool(extra.get("enable_confidence_head", False))
        cfg.confidence_head_with_markov = cfg.enable_confidence_head and bool(
            extra.get("confidence_head_with_markov", cfg.markov_rank > 0))
        if cfg.confidence_head_with_markov and cfg.markov_rank <= 0:
            raise ValueError(f"{source}: confidence_head_with_markov needs markov_rank > 0")
        return cfg


def detect_kind(raw: dict, state_keys: set[str], source: str = "config.json") -> str:
    arch = (raw.get("architectures") or [""])[0]
    if any(k.startswith("midlayer.") for k in state_keys) or "d2t" in state_keys or (
            "eagle" in arch.lower() and not arch.endswith("Eagle3Model")):
        raise ValueError(f"{source}: upstream EAGLE-3 checkpoints ({arch or 'midlayer.*/d2t layout'}) are not "
                         "supported; use a DeepSpec Qwen3Eagle3Model checkpoint (layers.0.*, full vocabulary)")
    if arch.endswith("Eagle3Model"):
        return "eagle3"
    if arch.endswith("DSparkModel"):
        return "dspark"
    if arch == "DFlash2DraftModel":
        raise ValueError(f"{source}: DFlash2DraftModel (conv layers, candidate selector) is not supported; "
                         "use a DFlashDraftModel or DeepSpec Qwen3DSparkModel checkpoint")
    if arch == "DFlashDraftModel" or "dflash_config" in raw or (
            state_keys and "embed_tokens.weight" not in state_keys and "fc.weight" in state_keys):
        return "zlab-dflash"
    raise ValueError(f"{source}: unsupported drafter architecture {arch!r}; expected Qwen3DSparkModel "
                     "(DSpark / DeepSpec DFlash), DFlashDraftModel (z-lab DFlash) or Qwen3Eagle3Model")
