"""``sparkserve drafter``: write a randomly initialised drafter checkpoint for a target.

    sparkserve drafter init --method dspark --target DIR --out DIR [--num-speculative-tokens 7]
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="drafter_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="write a random-init drafter in DeepSpec (or z-lab DFlash) layout")
    init.add_argument("--method", required=True, choices=["dspark", "dflash", "zlab-dflash", "eagle3"])
    init.add_argument("--target", default=None, help="target model directory (default: the embedded demo model)")
    init.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    init.add_argument("--num-speculative-tokens", type=int, default=7,
                      help="block size (DSpark/DFlash) or chain length (Eagle3)")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--markov-head-type", default="vanilla", choices=["vanilla", "gated", "rnn"])
    init.add_argument("--markov-rank", type=int, default=None, help="default: min(256, vocab // 8)")
    init.add_argument("--num-layers", type=int, default=None, help="draft layers (default 5, fewer for small targets)")
    init.add_argument("--target-layer-ids", type=int, nargs="+", default=None,
                      help="target layers whose residual outputs condition the drafter")


def run(args: argparse.Namespace) -> int:
    from sparkserve.tools.init_drafter import init_drafter

    target = args.target
    if target is None:
        from sparkserve.assets import demo_model_path

        target = demo_model_path()
    out = init_drafter(args.method, target, args.out, num_speculative_tokens=args.num_speculative_tokens,
                       seed=args.seed, markov_head_type=args.markov_head_type, markov_rank=args.markov_rank,
                       num_layers=args.num_layers, target_layer_ids=args.target_layer_ids)
    print(f"wrote a random-init {args.method} drafter to {out}")
    return 0
