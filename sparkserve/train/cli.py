"""``sparkserve train``: the drafter toolchain (``sparkserve/train/drafter/``).

    sparkserve train data --target DIR --prompts A.jsonl [B.jsonl ...] --out DATA
    sparkserve train fit --method dspark|dflash|eagle3 --target DIR --data DATA --out DRAFTER [--resume]
    torchrun --nproc_per_node N -m sparkserve train fit ...          (data parallel; gloo on CPU)
    sparkserve train calibrate --drafter DRAFTER --target DIR --prompts HELDOUT.jsonl --temperature 1
    sparkserve train eval --target DIR --drafter dspark=DIR --drafter eagle3=DIR --prompts demo-math.jsonl --out REPORT
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="train_command", required=True, metavar="ACTION")

    d = sub.add_parser("data", help="regenerate assistant responses with the target (token ids + loss mask)")
    d.add_argument("--target", required=True, help="target model directory")
    d.add_argument("--prompts", required=True, nargs="+", help='prompt files, one {"turns": [...]} per line')
    d.add_argument("--out", required=True, help="data directory (resumable: finished prompts are skipped)")
    d.add_argument("--max-prompts", type=int, default=None, help="at most this many conversations per file")
    d.add_argument("--subsample", type=int, default=None, help="N conversations drawn at random from all files")
    d.add_argument("--max-tokens", type=int, default=512, help="response length cap per turn")
    d.add_argument("--temperature", type=float, default=None, help="default: the target's generation_config")
    d.add_argument("--top-p", type=float, default=None)
    d.add_argument("--top-k", type=int, default=None)
    d.add_argument("--batch-size", type=int, default=64, help="prompts generated together (one shard each)")
    d.add_argument("--max-model-len", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    _runtime(d)

    f = sub.add_parser("fit", help="train a drafter on the target's online features")
    f.add_argument("--method", required=True, choices=["dspark", "dflash", "eagle3"])
    f.add_argument("--target", required=True)
    f.add_argument("--data", required=True, help="a `sparkserve train data` directory")
    f.add_argument("--out", required=True, help="drafter directory (checkpoints in OUT/checkpoints)")
    f.add_argument("--init", default=None, help="start from this drafter (default: random init in OUT/init)")
    f.add_argument("--steps", type=int, default=1000)
    f.add_argument("--batch-size", type=int, default=16, help="global sequences per step (split across ranks)")
    f.add_argument("--micro-batch-size", type=int, default=0, help="sequences per forward (0: a rank's share)")
    f.add_argument("--lr", type=float, default=6e-4)
    f.add_argument("--warmup-ratio", type=float, default=0.04)
    f.add_argument("--min-lr-ratio", type=float, default=0.0)
    f.add_argument("--weight-decay", type=float, default=0.0)
    f.add_argument("--grad-clip", type=float, default=1.0)
    f.add_argument("--block-size", type=int, default=7, help="drafts per block (DSpark/DFlash) or TTT steps (Eagle3)")
    f.add_argument("--num-anchors", type=int, default=512, help="blocks per sequence (DSpark/DFlash)")
    f.add_argument("--max-length", type=int, default=2048, help="sequences are cut to this many tokens")
    f.add_argument("--loss-decay-gamma", type=float, default=4.0)
    f.add_argument("--loss-weights", type=float, nargs=3, default=None, metavar=("CE", "TV", "CONF"),
                   help="DSpark loss weights (default 0.1 0.9 1.0, the paper's)")
    f.add_argument("--markov-head-type", default="vanilla", choices=["vanilla", "gated", "rnn"])
    f.add_argument("--markov-rank", type=int, default=None, help="default: min(256, vocab // 8)")
    f.add_argument("--num-layers", type=int, default=None, help="draft layers (DSpark/DFlash; default 5)")
    f.add_argument("--mask-token-id", type=int, default=None, help="default: the tokenizer's <|mask|>")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    f.add_argument("--feature-cache", default=None, help="cache target features here (safetensors shards)")
    f.add_argument("--feature-cache-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    f.add_argument("--ckpt-every-steps", type=int, default=0, help="0: every --ckpt-every-s and at the end")
    f.add_argument("--ckpt-every-s", type=float, default=600.0)
    f.add_argument("--log-every", type=int, default=10)
    f.add_argument("--save-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    f.add_argument("--target-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    f.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill
    _runtime(f)

    c = sub.add_parser("calibrate", help="fit STS confidence temperatures; writes DRAFTER/calibration.json")
    c.add_argument("--drafter", required=True, help="a DSpark drafter directory")
    c.add_argument("--target", required=True)
    c.add_argument("--prompts", required=True, nargs="+", help="held-out prompt files")
    c.add_argument("--temperature", type=float, required=True, help="the serving temperature")
    c.add_argument("--top-p", type=float, default=1.0, help="the serving top-p")
    c.add_argument("--top-k", type=int, default=0, help="the serving top-k (0: off)")
    c.add_argument("--max-prompts", type=int, default=None, help="at most this many conversations per file")
    c.add_argument("--subsample", type=int, default=None, help="N conversations drawn at random from all files")
    c.add_argument("--max-tokens", type=int, default=256)
    c.add_argument("--seed", type=int, default=0)
    _runtime(c)

    e = sub.add_parser("eval", help="tau, cond@k and calibration report through the engine")
    e.add_argument("--target", required=True)
    e.add_argument("--drafter", required=True, action="append", help="METHOD=DIR (repeatable)")
    e.add_argument("--prompts", required=True, nargs="+", help="one dataset per file")
    e.add_argument("--out", required=True, help="report directory")
    e.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.0])
    e.add_argument("--max-prompts", type=int, default=None)
    e.add_argument("--max-tokens", type=int, default=256)
    e.add_argument("--seed", type=int, default=0)
    _runtime(e)


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.threads:
        torch.set_num_threads(args.threads)
    elif world > 1:  # torchrun on CPU: share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    cmd = args.train_command
    if cmd == "data":
        from sparkserve.train.drafter.data import regenerate

        regenerate(args.target, args.prompts, args.out, max_tokens=args.max_tokens, batch_size=args.batch_size,
                   seed=args.seed, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                   max_prompts=args.max_prompts, subsample=args.subsample, max_model_len=args.max_model_len,
                   device=args.device,
                   num_threads=args.threads)
    elif cmd == "fit":
        from sparkserve.train.drafter.trainer import FitConfig, fit

        cfg = FitConfig(method=args.method, steps=args.steps, batch_size=args.batch_size,
                        micro_batch_size=args.micro_batch_size, lr=args.lr, warmup_ratio=args.warmup_ratio,
                        min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                        seed=args.seed, block_size=args.block_size, num_anchors=args.num_anchors,
                        max_length=args.max_length, loss_decay_gamma=args.loss_decay_gamma,
                        loss_weights=tuple(args.loss_weights) if args.loss_weights else None,
                        markov_head_type=args.markov_head_type, markov_rank=args.markov_rank,
                        num_layers=args.num_layers, mask_token_id=args.mask_token_id)
        fit(cfg, args.target, args.data, args.out, init=args.init, resume=args.resume,
            log=lambda s: print(s, flush=True), device=args.device, target_dtype=args.target_dtype,
            feature_cache=args.feature_cache, feature_cache_dtype=getattr(torch, args.feature_cache_dtype),
            ckpt_every_steps=args.ckpt_every_steps, ckpt_every_s=args.ckpt_every_s, log_every=args.log_every,
            save_dtype=getattr(torch, args.save_dtype), stop_after_steps=args.stop_after_steps)
    elif cmd == "calibrate":
        from sparkserve.train.drafter.calibrate import calibrate

        calibrate(args.drafter, args.target, args.prompts, args.temperature, top_p=args.top_p, top_k=args.top_k,
                  max_prompts=args.max_prompts, subsample=args.subsample, max_tokens=args.max_tokens,
                  seed=args.seed, device=args.device, num_threads=args.threads)
    elif cmd == "eval":
        from sparkserve.train.drafter.evaluate import evaluate, parse_drafter

        evaluate(args.target, [parse_drafter(s) for s in args.drafter], args.prompts, args.out,
                 temperatures=args.temperatures, max_prompts=args.max_prompts, max_tokens=args.max_tokens,
                 seed=args.seed, device=args.device, num_threads=args.threads)
    return 0
