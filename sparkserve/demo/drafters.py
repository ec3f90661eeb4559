"""`sparkserve demo drafters`: the recipe of the shipped demo drafters, one resumable pipeline.

    data (regenerate with the target) -> fit dspark, dflash, eagle3 (same data, same steps and batch)
    -> calibrate dspark (STS at the demo's serving sampling) -> eval (T=1 and T=0) -> ship to assets
    (slim: without the embedding/lm_head copies of the target, see ``write_slim_drafter``)

Each stage is a `sparkserve train ...` command run in this process; a finished stage leaves
``OUT/done-<stage>`` and is skipped on a rerun, and `fit` resumes from its newest checkpoint, so an
interrupted build continues where it stopped. ``--quick`` runs the same stages on the quick demo
target in a minute or two (CI).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace

from sparkserve.train.cli import add_arguments as add_train_arguments
from sparkserve.train.cli import run as train_run


@dataclass(frozen=True)
class DrafterRecipe:
    """Budgets of one drafter build; every method gets the same data, steps and batch."""

    name: str
    methods: tuple[str, ...] = ("dspark", "dflash", "eagle3")
    num_prompts: int = 5000  # conversations drawn from the corpus train split
    max_tokens: int = 384  # response cap when regenerating
    data_batch: int = 128
    steps: int = 400
    # Same compute budget: an Eagle3 TTT step scores every position gamma times (16x the rows of a
    # DSpark step with 32 anchors), 9 s vs 3.2 s here, so it gets the steps DSpark's wall time buys.
    eagle3_steps: int | None = 155
    batch_size: int = 16  # sequences per optimizer step
    lr: float = 1e-3
    block_size: int = 7  # drafts per block (gamma); Eagle3: TTT steps
    num_layers: int = 2
    markov_rank: int = 64
    num_anchors: int = 32
    max_length: int = 512
    calib_prompts: int = 300  # validation conversations for STS
    eval_prompts: int = 40  # per demo-*.jsonl set
    eval_max_tokens: int = 192
    # DSpark's loss (CE, TV, confidence). The paper's 0.1/0.9/1.0 leaves the drafter's argmax accuracy
    # behind DFlash's at this small budget (k=1 training accuracy 0.51 vs 0.61 at step 200); weighting
    # CE fully and dropping TV beats DFlash at every position (0.62, k=7 +40%) and in engine tau
    # (bench/RESULTS.md, "Demo drafters", loss-mix ablation). None: `train fit`'s paper default.
    dspark_loss_weights: tuple[float, float, float] | None = (1.0, 0.0, 1.0)


FULL = DrafterRecipe(name="full")
QUICK = DrafterRecipe(name="quick", num_prompts=24, max_tokens=48, data_batch=8, steps=12, eagle3_steps=None,
                      batch_size=4, num_anchors=4, max_length=128, num_layers=1, markov_rank=16, calib_prompts=8, eval_prompts=4,
                      eval_max_tokens=24)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _stage(out: str, name: str, argv: list[str]) -> None:
    marker = os.path.join(out, f"done-{name}")
    if os.path.exists(marker):
        log(f"{name}: done earlier, skipped")
        return
    log(f"{name}: sparkserve train {' '.join(argv)}")
    t0 = time.time()
    p = argparse.ArgumentParser(prog="sparkserve train")
    add_train_arguments(p)
    train_run(p.parse_args(argv))
    with open(marker, "w") as f:
        f.write(f"{time.time() - t0:.1f}\n")
    log(f"{name}: finished in {time.time() - t0:.0f} s")


def build_drafters(r: DrafterRecipe, demo_dir: str, out: str, export_dir: str | None, threads: int | None,
                   seed: int = 0) -> None:
    """`demo_dir` is a `sparkserve demo build` work directory (its model/ and corpus/)."""
    target, corpus = os.path.join(demo_dir, "model"), os.path.join(demo_dir, "corpus")
    os.makedirs(out, exist_ok=True)
    rt = ["--threads", str(threads)] if threads else []
    data = os.path.join(out, "data")
    _stage(out, "data", ["data", "--target", target, "--prompts", os.path.join(corpus, "train.jsonl"),
                         "--subsample", str(r.num_prompts), "--max-tokens", str(r.max_tokens),
                         "--batch-size", str(r.data_batch), "--out", data, "--seed", str(seed)] + rt)
    for m in r.methods:
        _stage(out, f"fit-{m}", [
            "fit", "--method", m, "--target", target, "--data", data, "--out", os.path.join(out, m), "--resume",
            "--steps", str(r.eagle3_steps if m == "eagle3" and r.eagle3_steps else r.steps),
            "--batch-size", str(r.batch_size), "--lr", str(r.lr),
            "--block-size", str(r.block_size), "--num-layers", str(r.num_layers), "--markov-rank", str(r.markov_rank),
            "--num-anchors", str(r.num_anchors), "--max-length", str(r.max_length), "--seed", str(seed)]
           + (["--loss-weights", *map(str, r.dspark_loss_weights)] if m == "dspark" and r.dspark_loss_weights else [])
           + rt)
    if "dspark" in r.methods:
        _stage(out, "calibrate", [
            "calibrate", "--drafter", os.path.join(out, "dspark"), "--target", target,
            "--prompts", os.path.join(corpus, "validation.jsonl"), "--subsample", str(r.calib_prompts),
            "--temperature", "0.7", "--top-p", "0.8", "--top-k", "20", "--seed", str(seed)] + rt)
    sets = [os.path.join(target, f"demo-{d}.jsonl") for d in ("math", "code", "chat")]
    _stage(out, "eval", ["eval", "--target", target, "--prompts", *sets, "--out", os.path.join(out, "report"),
                         "--max-prompts", str(r.eval_prompts), "--max-tokens", str(r.eval_max_tokens),
                         "--seed", str(seed)]
           + [a for m in r.methods for a in ("--drafter", f"{m}={os.path.join(out, m)}")] + rt)
    if export_dir:
        from sparkserve.tools.slim_drafter import write_slim_drafter

        for m in r.methods:
            write_slim_drafter(os.path.join(out, m), os.path.join(export_dir, "drafters", m))
        log(f"copied {', '.join(r.methods)} to {export_dir}/drafters")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", default=None, help="demo build directory (default runs/demo or runs/demo-quick)")
    p.add_argument("--out", default=None, help="work directory (default runs/drafters or runs/drafters-quick)")
    p.add_argument("--quick", action="store_true", help="tiny budgets on the quick demo target (CI)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--export", default=None, help="also copy the drafters to EXPORT/drafters/<method> "
                   "(default: none; they stay in OUT)")
    g.add_argument("--ship", action="store_true", help="copy them over the shipped drafters in "
                   "sparkserve/assets/demo/drafters (maintainers)")
    g.add_argument("--no-export", action="store_true", help="the default")
    p.add_argument("--methods", nargs="+", default=None, help="subset of dspark dflash eagle3")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's optimizer steps")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from sparkserve.demo.build import export_target

    r = QUICK if args.quick else FULL
    if args.methods:
        r = replace(r, methods=tuple(args.methods))
    if args.steps:
        r = replace(r, steps=args.steps, eagle3_steps=None)
    demo = args.demo or os.path.join("runs", "demo-quick" if args.quick else "demo")
    if not os.path.isdir(os.path.join(demo, "model")):
        raise SystemExit(f"{demo}/model not found: run `sparkserve demo build{' --quick' if args.quick else ''}` first")
    out = args.out or os.path.join("runs", "drafters-quick" if args.quick else "drafters")
    export = export_target(args)  # never the shipped assets unless asked (--ship)
    build_drafters(r, demo, out, export, args.threads, args.seed)
    return 0
