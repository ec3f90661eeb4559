"""Load a drafter directory (``config.json`` + safetensors, never pickle) as a ``Proposer``.

The layout is detected from the config and the tensor names (``drafters/config.py``); every key and
shape is checked against the model the config implies, and the drafter is refused when it does not
fit the target (hidden size, vocabulary, depth, target layers, mask token), each with a message
that names both sides.
"""
from __future__ import annotations

import json
import os

import torch

from sparkserve.attention.registry import get_backend
from sparkserve.layers.linear import use_cpu_inference_linears
from sparkserve.models.hf_config import DecoderConfig, read_config_json
from sparkserve.models.loader import DTYPES, read_state_dict
from sparkserve.spec_decode.drafters.config import DraftConfig
from sparkserve.spec_decode.drafters.dspark import DSparkDraftModel, DSparkProposer
from sparkserve.spec_decode.drafters.eagle3 import Eagle3DraftModel, Eagle3Proposer
from sparkserve.spec_decode.drafters.ngram import NgramProposer
from sparkserve.spec_decode.types import Proposer

METHODS = ("dspark", "dflash", "zlab-dflash", "eagle3", "ngram", "auto")


def read_draft_config(path: str, state_keys: set[str] | None = None, method: str | None = None) -> DraftConfig:
    file = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise ValueError(f"drafter path {path!r} is not a directory")
    raw = read_config_json(file, f"no config.json in drafter directory {path!r}")
    return DraftConfig.from_dict(raw, state_keys, method, source=file)


# DeepSpec tensors a slim checkpoint leaves out (frozen copies of the target's; tools/slim_drafter.py)
FROZEN_VOCAB = ("embed_tokens.weight", "lm_head.weight")


# -- STS calibration (written by `sparkserve train calibrate`, DSPARK.md §1.8) ----------------------
CALIBRATION_FILE = "calibration.json"


def read_calibration(path: str) -> list[float] | None:
    """Per-position confidence temperatures T_k from ``path/calibration.json`` (None if absent)."""
    file = os.path.join(path, CALIBRATION_FILE)
    if not os.path.exists(file):
        return None
    try:
        with open(file) as f:
            temps = [float(t) for t in json.load(f)["temperatures"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{file} is not a valid calibration file: {e}") from None
    if not temps or any(not t > 0 for t in temps):
        raise ValueError(f"{file}: temperatures must be positive numbers, got {temps}")
    return temps
# ---------------------------------------------------------------------------------------------------


def check_against_target(dcfg: DraftConfig, target: DecoderConfig, path: str = "drafter") -> None:
    """Refuse a drafter trained for another target (ValueError naming both values)."""
    m = dcfg.model
    if m.hidden_size != target.hidden_size:
        raise ValueError(f"{path}: drafter hidden_size {m.hidden_size} != target hidden_size {target.hidden_size}; "
                         "this drafter was built for a different target model")
    if m.vocab_size != target.vocab_size:
        raise ValueError(f"{path}: drafter vocab_size {m.vocab_size} != target vocab_size {target.vocab_size}; "
                         "this drafter was built for a different target model")
    num_layers = target.num_hidden_layers
    trained_for = m.extra.get("num_target_layers")
    if trained_for is not None and int(trained_for) != num_layers:
        raise ValueError(f"{path}: drafter was built for a {trained_for}-layer target, the target has "
                         f"{num_layers} layers")
    bad = [i for i in dcfg.target_layer_ids if not -1 <= i <= num_layers - 2]
    if bad or not dcfg.target_layer_ids:
        raise ValueError(f"{path}: target_layer_ids {list(dcfg.target_layer_ids)} must be non-empty and within "
                         f"-1..{num_layers - 2} for a {num_layers}-layer target (-1 = embeddings; the last layer "
                         f"{num_layers - 1} is not allowed: DeepSpec trains on pre-final-norm residuals); bad: {bad}")
    if dcfg.kind != "eagle3":
        if not 0 <= dcfg.mask_token_id < target.vocab_size:
            raise ValueError(f"{path}: mask_token_id {dcfg.mask_token_id} is outside the target vocabulary "
                             f"(0..{target.vocab_size - 1})")
        if dcfg.block_size < (2 if dcfg.kind == "zlab-dflash" else 1):
            raise ValueError(f"{path}: block_size {dcfg.block_size} yields no drafts")


def _check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str, kind: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"drafter checkpoint {path!r} does not match its config ({kind}): "
                         f"missing keys {missing}, unexpected keys {unexpected}")
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)}, config implies {tuple(v.shape)}"
             for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"drafter checkpoint {path!r} has wrong shapes: " + "; ".join(wrong))


def _resolve_dtype(dtype, target_model, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    if target_model is not None:
        return next(target_model.parameters()).dtype
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def load_drafter(path: str | None, target_config, target_model=None, method: str | None = None,
                 num_blocks: int = 0, block_size: int = 16, device: str | torch.device | None = None, dtype=None, *,
                 num_speculative_tokens: int | None = None, ngram_max: int = 4, ngram_min: int = 2,
                 attention_backend: str = "auto", fuse: bool = False) -> Proposer:
    """Build the proposer for ``method`` (see METHODS; None/"auto": whatever the checkpoint is).

    ``target_config``: the target's ``DecoderConfig`` (a loaded target model is accepted here too,
    standing for both arguments). ``target_model``: the loaded target (a ``DecoderForCausalLM``);
    its ``model.embed_tokens`` and ``lm_head`` serve z-lab DFlash drafters, which do not ship them.
    ``num_blocks``/``block_size``: the target's paged-cache geometry, which the drafter's context
    cache mirrors. ``device``/``dtype``: default to the target model's (else CPU / fp32); ``dtype``
    may be a torch dtype or a name. ``num_speculative_tokens`` caps gamma (for ``ngram`` it sets
    it; default 4). ``attention_backend``: the target's backend name (``attention.registry``); the
    drafter attends through its own instance of it. ``fuse``: the serving layout of a DSpark/DFlash drafter
    (fused qkv and gate/up products, which the captured draft step needs; ``state_dict()`` is then no
    longer the checkpoint's).
    """
    if not isinstance(target_config, DecoderConfig) and isinstance(getattr(target_config, "config", None),
                                                                    DecoderConfig):
        target_model, target_config = target_config, target_config.config
    if method == "ngram":
        return NgramProposer(num_speculative_tokens or 4, ngram_max, ngram_min)
    if method not in METHODS and method is not None:
        raise ValueError(f"unknown drafter method {method!r}; expected one of {list(METHODS)}")
    if path is None:
        raise ValueError(f"drafter method {method!r} needs a checkpoint directory")
    if num_blocks <= 0:
        raise ValueError(f"num_blocks must be the target's paged-cache block count (> 0), got {num_blocks}")
    if device is None:
        device = next(target_model.parameters()).device if target_model is not None else "cpu"
    device = torch.device(device)
    state = read_state_dict(path)
    dcfg = read_draft_config(path, set(state), method)
    check_against_target(dcfg, target_config, path)
    if dcfg.kind != "zlab-dflash" and not any(k in state for k in FROZEN_VOCAB):
        if target_model is None:
            raise ValueError(f"{path} ships without {' / '.join(FROZEN_VOCAB)} (frozen copies of the target's): "
                             "load it with the target model")
        state["embed_tokens.weight"] = target_model.model.embed_tokens.weight.detach()
        state["lm_head.weight"] = target_model.lm_head.weight.detach()
    if dcfg.model.tie_word_embeddings and "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    cls = Eagle3DraftModel if dcfg.kind == "eagle3" else DSparkDraftModel
    with torch.device("meta"):
        model = cls(dcfg)
    _check_state(state, model.state_dict(), path, dcfg.kind)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=device, dtype=_resolve_dtype(dtype, target_model, device)).eval()
    if fuse and isinstance(model, DSparkDraftModel):
        model.fuse_for_inference()  # fused qkv and gate/up products for serving (and the captured draft step)
    if device.type == "cpu":
        # the chain/Markov steps are 1-2 row products (layers/linear.py); bf16 storage only where exact
        use_cpu_inference_linears(model, bf16_when_exact=dtype in (None, "auto"))
    backend = get_backend(attention_backend, device.type)
    if dcfg.kind == "eagle3":
        proposer = Eagle3Proposer(model, num_blocks, block_size, attention_backend=backend)
    elif dcfg.kind == "zlab-dflash":
        if target_model is None:
            raise ValueError("a z-lab DFlash drafter needs the target model (it uses its embed_tokens and lm_head)")
        proposer = DSparkProposer(model, num_blocks, block_size, embed_tokens=target_model.model.embed_tokens,
                                  lm_head=target_model.lm_head, attention_backend=backend)
    else:
        temps = read_calibration(path) if model.confidence_head is not None else None  # STS, if calibrated
        proposer = DSparkProposer(model, num_blocks, block_size, confidence_temperatures=temps,
                                  attention_backend=backend)
    if num_speculative_tokens is not None:
        if not 1 <= num_speculative_tokens <= proposer.num_speculative_tokens:
            raise ValueError(f"num_speculative_tokens {num_speculative_tokens} must be within "
                             f"1..{proposer.num_speculative_tokens} for this drafter")
        proposer.num_speculative_tokens = num_speculative_tokens
    return proposer
