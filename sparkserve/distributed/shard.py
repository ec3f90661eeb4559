"""One rank's shard of a loaded full decoder (``shard_for_tensor_parallel``), applied after load, before fusing."""
from __future__ import annotations

import dataclasses

from sparkserve.distributed.sizes import check_tensor_parallel
from sparkserve.layers.parallel_linear import RowParallelLinear, VocabParallelLMHead, column_parallel


def local_config(cfg, world: int):
    """The rank's view of a DecoderConfig: 1/world of the heads, KV heads and MLP units (head_dim and
    vocab_size stay whole: logits are gathered to the full vocabulary)."""
    return dataclasses.replace(cfg, num_attention_heads=cfg.num_attention_heads // world,
                               num_key_value_heads=cfg.num_key_value_heads // world,
                               intermediate_size=cfg.intermediate_size // world, head_dim=cfg.head_dim)


def shard_for_tensor_parallel(model, rank: int, world: int):
    """Slice ``model`` (an unfused DecoderForCausalLM, full weights) in place into rank ``rank``'s shard of
    ``world``: q/k/v and gate/up column-parallel (heads and KV heads split, consecutive per rank, so GQA's
    query-to-KV-head grouping holds locally), o_proj and down_proj row-parallel, lm_head vocab-parallel.
    Embeddings and norms stay replicated. Returns the model."""
    cfg = model.config
    check_tensor_parallel(cfg, world)
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.q_proj = column_parallel(attn.q_proj, rank, world)
        attn.k_proj = column_parallel(attn.k_proj, rank, world)
        attn.v_proj = column_parallel(attn.v_proj, rank, world)
        attn.o_proj = RowParallelLinear(attn.o_proj, rank, world)
        attn.num_heads, attn.num_kv_heads = attn.num_heads // world, attn.num_kv_heads // world
        mlp.gate_proj = column_parallel(mlp.gate_proj, rank, world)
        mlp.up_proj = column_parallel(mlp.up_proj, rank, world)
        mlp.down_proj = RowParallelLinear(mlp.down_proj, rank, world)
    model.lm_head = VocabParallelLMHead(model.lm_head, rank, world)
    model.config = local_config(cfg, world)
    model.native_stack = None  # the captured stack knows nothing of collectives
    return model
