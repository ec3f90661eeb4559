"""SPS(B): step time by forward tokens B on random-weight Qwen3-shaped targets, per attention backend,
eager and with CUDA graphs.

    python bench/gpu_step_profile.py --shapes qwen3-0.6b qwen3-8b --backends torch triton flashinfer \
        --modes eager graphs --budgets 1 2 4 ... 4096 --out DIR

For each shape the target is built with random weights (bf16 on CUDA; nothing is downloaded) and run
through the real ``ModelRunner`` on synthetic plans (``spec_decode/profile.py``: up to --max-num-seqs
decoding sequences at --context cached tokens, prefill chunks for the rest, greedy, drafting off).
Per (shape, backend, mode) it reports the median step time over --repeats at every B, the c=1 ratio of
a 1+7-token verify step to a 1-token step, and for B=1 the HBM roofline (weight bytes / --hbm-tb-s).
Mode ``graphs`` captures the runner's decode (1 row per sequence) and 1+7-row forwards over buckets of the
decode budgets (``runner/cuda_graphs.py``): decode steps up to --max-num-seqs sequences and the c=1 verify
step replay, steps with prefill chunks run eagerly; a backend that cannot be graphed gets a "skipped" row.
Each row also times the draft step (``propose``: block forward, lm_head, greedy draws) of a random
--draft-layers-layer DFlash drafter (z-lab layout: the target's embed_tokens and lm_head, blocks of 1 + 7
rows) for --draft-batches requests at --context; in mode ``graphs`` its block forward replays
(``runner/draft_graphs.py``).
``--shapes tiny --device cpu`` is the CPU dry run (under TRITON_INTERPRET=1 for the triton backend; its
graphs mode replays by calling the recorded step, which checks the buffers, not the speed). Writes
profile.json and profile.md into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "triton_kernels")]

SHAPES = {  # Qwen3 configs (hidden, intermediate, layers, heads, kv heads, head dim, vocab, tied)
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=512, tie_word_embeddings=True),
}


def build_model(shape: str, device: torch.device, dtype: torch.dtype):
    """A random-weight target of this shape, fused for inference as the engine does."""
    from sparkserve.models.hf_config import DecoderConfig
    from sparkserve.models.registry import model_class

    cfg = DecoderConfig(max_position_embeddings=40960, **SHAPES[shape])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(cfg)(cfg)
    finally:
        torch.set_default_dtype(default)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.rotary = type(model.rotary)(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta,
                                      cfg.rope_scaling).to(device)
    model.fuse_for_inference()
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    return model.eval(), cfg, weight_bytes


def verify_plan(runner, context: int, drafts: int):
    """c = 1: one sequence at ``context`` cached tokens running 1 + ``drafts`` rows (one-hot drafts)."""
    from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan

    blocks = list(range(1, 2 + (context + drafts + 2) // runner.block_size))
    tokens = [(11 * j) % 1000 + 3 for j in range(1 + drafts)]
    return StepPlan([ScheduledSeq("verify-0", tokens, context, blocks, SamplingMeta(temperature=0.0),
                                  num_draft_tokens=drafts)], draft=False)


def median_time(fn, repeats: int, sync) -> float:
    fn()  # warm-up (compiles kernels, plans)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def graph_settings(args, device):
    """Buckets at the decode budgets (a B-token decode step of B sequences replays unpadded), the 1-row
    and 1+7-row forwards, tables as long as the profile's sequences."""
    from sparkserve.runner.cuda_graphs import CudaGraphCapture, GraphSettings, ReplayByCall

    buckets = tuple(sorted({b for b in args.budgets if b <= args.max_num_seqs} | {1}))
    return GraphSettings(capturer=CudaGraphCapture() if device.type == "cuda" else ReplayByCall(), buckets=buckets,
                         max_tokens=max(max(buckets), 8), max_model_len=args.context + max(args.budgets) + 16,
                         query_lens=(1, 8))


def build_drafter(model, cfg, backend: str, num_blocks: int, block_size: int, layers: int):
    """A random DFlash drafter of the target's shape on its embed_tokens and lm_head (no checkpoint)."""
    import dataclasses

    from sparkserve.attention.registry import get_backend
    from sparkserve.spec_decode.drafters import DraftConfig, DSparkDraftModel, DSparkProposer

    dcfg = DraftConfig("zlab-dflash", dataclasses.replace(cfg, num_hidden_layers=layers), target_layer_ids=(0,),
                       block_size=8, mask_token_id=0)
    param = next(model.parameters())
    torch.manual_seed(1)
    with torch.device(param.device):
        drafter = DSparkDraftModel(dcfg).to(param.dtype).fuse_for_inference().eval()
    return DSparkProposer(drafter, num_blocks, block_size, embed_tokens=model.model.embed_tokens,
                          lm_head=model.lm_head, attention_backend=get_backend(backend, param.device.type))


def draft_times(proposer, batches, args, sync) -> dict:
    """Median propose time (ms) for c greedy requests at ``args.context`` cached positions, per c."""
    from sparkserve.spec_decode.types import ProposeRequest
    from sparkserve.step import SamplingMeta

    per = -(-(args.context + 1) // proposer.block_size)
    times = {}
    for c in batches:
        reqs = [ProposeRequest(f"d{i}", 5 + i, args.context, None, list(range(1 + i * per, 1 + (i + 1) * per)),
                               SamplingMeta(temperature=0.0), None, 7) for i in range(c)]
        times[c] = 1e3 * median_time(lambda reqs=reqs: proposer.propose(reqs), args.repeats, sync)
    return times


def profile(shape, backend, mode, model, cfg, weight_bytes, args, device) -> dict:
    from sparkserve.runner.cuda_graphs import unsupported_reason
    from sparkserve.runner.model_runner import ModelRunner
    from sparkserve.spec_decode.profile import synthetic_plan
    from sparkserve.step import StepPlan

    bs = 16
    per_seq = -(-(args.context + max(args.budgets) + 8) // bs)
    num_blocks = 2 + args.max_num_seqs * -(-(args.context + 16) // bs) + per_seq
    graphs = mode == "graphs"
    runner = ModelRunner(model, num_blocks, bs, backend, enforce_eager=not graphs,
                         graphs=graph_settings(args, device) if graphs else None)
    row = {"shape": shape, "backend": backend, "mode": mode, "weight_bytes": weight_bytes, "step_ms": {}}
    if graphs and runner.graphs is None:
        return {**row, "skipped": f"no CUDA graphs: {unsupported_reason(runner.backend)}"}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for b in args.budgets:
        plan = synthetic_plan(runner, b, args.max_num_seqs, args.context, num_drafting=0)
        done = StepPlan([], finished_request_ids=[s.request_id for s in plan.seqs])
        row["step_ms"][b] = 1e3 * median_time(lambda: (runner.execute(plan), runner.execute(done)), args.repeats, sync)
    one = verify_plan(runner, args.context, 0)
    block = verify_plan(runner, args.context, 7)
    row["decode_c1_ms"] = 1e3 * median_time(lambda: runner.execute(one), args.repeats, sync)
    row["verify_1p7_c1_ms"] = 1e3 * median_time(lambda: runner.execute(block), args.repeats, sync)
    row["verify_over_decode"] = row["verify_1p7_c1_ms"] / row["decode_c1_ms"]
    row["roofline_b1_ms"] = 1e3 * weight_bytes / (args.hbm_tb_s * 1e12)
    row["b1_over_roofline"] = row["step_ms"][args.budgets[0]] / row["roofline_b1_ms"] if args.budgets[0] == 1 else None
    batches = [c for c in args.draft_batches if c <= args.max_num_seqs]
    proposer = build_drafter(model, cfg, backend, num_blocks, bs, args.draft_layers)
    if graphs:
        from sparkserve.runner.cuda_graphs import GraphSettings
        from sparkserve.runner import draft_graphs

        settings = GraphSettings(capturer=runner.graphs.capturer, buckets=tuple(batches), max_tokens=8 * max(batches),
                                 max_model_len=args.context + 16)  # the target's capturer: one memory pool
        draft_graphs.build(proposer, False, settings)
    row["draft_ms"] = draft_times(proposer, batches, args, sync)
    if graphs:
        row["graph_replays"] = {f"{b}x{q}": n for (b, q), n in sorted(runner.graphs.replayed.items())}
        row["graph_eager_steps"] = runner.graphs.num_eager
        row["draft_graph_replays"] = {f"{b}": n for b, n in sorted(proposer.graphs.replayed.items())} \
            if proposer.graphs is not None else {}
    return row


def markdown(rows, args) -> str:
    batches = [c for c in args.draft_batches if c <= args.max_num_seqs]
    title = (f"SPS(B) step time (ms), context {args.context}, median of {args.repeats}; graphs: decode steps up to "
             f"{args.max_num_seqs} sequences, the c=1 verify step and the draft step's block forward replay CUDA "
             f"graphs; draft step: a random {args.draft_layers}-layer DFlash drafter, blocks of 1 + 7 rows")
    lines = [title, "",
             "| shape | backend | mode | " + " | ".join(f"B={b}" for b in args.budgets)
             + " | 1+7 / 1 at c=1 | B=1 / roofline | draft step ms at c = " + "/".join(map(str, batches)) + " |",
             "|---|---|---|" + "---|" * (len(args.budgets) + 3)]
    for r in rows:
        head = f"| {r['shape']} | {r['backend']} | {r.get('mode', 'eager')} |"
        if "error" in r or "skipped" in r:
            lines.append(f"{head} {'error: ' + r['error'] if 'error' in r else r['skipped']} |")
            continue
        ratio = f"{r['b1_over_roofline']:.2f}" if r["b1_over_roofline"] is not None else "-"
        lines.append(f"{head} " + " | ".join(f"{r['step_ms'][b]:.2f}" for b in args.budgets)
                     + f" | {r['verify_over_decode']:.3f} | {ratio} | "
                     + "/".join(f"{r['draft_ms'][c]:.2f}" for c in batches) + " |")
    return "\n".join(lines) + "\n"


def write(rows, args, device) -> None:
    with open(os.path.join(args.out, "profile.json"), "w") as f:
        json.dump({"args": vars(args), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                   "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "profile.md"), "w") as f:
        f.write(markdown(rows, args))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["qwen3-0.6b", "qwen3-8b"], choices=list(SHAPES))
    ap.add_argument("--backends", nargs="+", default=["torch", "triton", "flashinfer"])
    ap.add_argument("--modes", nargs="+", default=["eager", "graphs"], choices=("eager", "graphs"))
    ap.add_argument("--budgets", type=int, nargs="+", default=[1 << i for i in range(13)])
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--draft-batches", type=int, nargs="+", default=[1, 4, 16, 64, 256],
                    help="requests per timed draft step (those above --max-num-seqs are left out)")
    ap.add_argument("--draft-layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--hbm-tb-s", type=float, default=4.8, help="HBM bandwidth for the roofline (H200: 4.8)")
    ap.add_argument("--out", default="/tmp/sparkserve-device-check")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for shape in args.shapes:
        model, cfg, weight_bytes = build_model(shape, device, getattr(torch, args.dtype))
        for backend in args.backends:
            for mode in args.modes:
                try:
                    rows.append(profile(shape, backend, mode, model, cfg, weight_bytes, args, device))
                except Exception as e:  # a missing backend is a result, not the end of the run
                    rows.append({"shape": shape, "backend": backend, "mode": mode,
                                 "error": f"{type(e).__name__}: {e}"[:300]})
                print(json.dumps(rows[-1]), flush=True)
                write(rows, args, device)  # after every row: a run cut short by its time limit keeps what it measured
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the graphs' memory pool goes with their runner
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(markdown(rows, args))
    return 0 if all("error" not in r or r["backend"] == "flashinfer" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
