"""Which model sizes must divide by the tensor-parallel size (torch-free: ``launch`` checks before the port)."""
from __future__ import annotations

from sparkserve.models.hf_config import DecoderConfig


def check_tensor_parallel(cfg: DecoderConfig, world: int) -> None:
    """ValueError naming every size of ``cfg`` that does not split evenly over ``world`` ranks."""
    if world < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {world}")
    sizes = {"num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
             "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size}
    bad = [f"{name} {size}" for name, size in sizes.items() if size % world]
    if bad:
        raise ValueError(f"tensor_parallel_size {world} does not divide this model's {', '.join(bad)}: each rank "
                         f"holds an equal share of the attention heads, KV heads, MLP units and vocabulary; "
                         f"choose a size that divides all of them")
