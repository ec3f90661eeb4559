"""``sparkserve profile``: measure the step-time table t(B, R) the verify planners plan with, print it,
and save it where the engine looks for it (so the next ``sparkserve launch`` with the same model,
drafter, dtype, backend, hardware and token budget starts without profiling).

    sparkserve profile [--model DIR] [--speculative-config JSON] [--max-num-batched-tokens N]
                       [--time-limit S] [--out FILE] [--no-save] [--show]
"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sparkserve.cli_args import speculative_config_arg

    p.add_argument("--model", default=None, metavar="DIR", help="target model (default: the embedded demo model)")
    p.add_argument("--speculative-config", type=speculative_config_arg, default=None, metavar="JSON",
                   help="as for launch (default for the demo model: its shipped DSpark drafter)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--device", default="auto")
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--attention-backend", default="auto", choices=("auto", "torch", "cpu", "triton", "flashinfer"))
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048, help="the token budget B_max (grid end)")
    p.add_argument("--time-limit", type=float, default=30.0, metavar="S", help="profiling time (default: 30 s)")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $SPARKSERVE_CACHE_DIR or "
                   "~/.cache/sparkserve)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the table as JSON here")
    p.add_argument("--no-save", action="store_true", help="do not write the engine's cache")
    p.add_argument("--show", action="store_true",
                   help="print the cached tables of this model and drafter (every dtype, backend and thread count "
                        "they were measured with); measure nothing, load nothing")


def format_table(table) -> str:
    rows = [f"{'tokens B':>9} {'step ms':>9} {'+/- ms':>8} {'steps/s':>9} {'tokens/s':>10}"]
    for b, t, s in zip(table.buckets, table.step_times_s, table.scales_s):
        rows.append(f"{b:>9d} {t * 1e3:>9.2f} {s * 1e3:>8.2f} {1 / t:>9.1f} {b / t:>10.0f}")
    for r in table.num_drafting:  # drafting rows: step ms at each B with R requests drafting after it
        rows.append(f"R={r:<7d} " + " ".join(f"{table.step_time_s(b, r) * 1e3:.2f}" for b in table.buckets))
    return "\n".join(rows)


def cached_tables(model: str, drafter: str, root: str | None = None) -> list:
    """Every readable cached table measured for ``model`` with ``drafter``, newest first (no engine needed:
    the key is stored in each file)."""
    import glob
    import os

    from sparkserve.spec_decode.cost_model import CostTable, OutdatedFormat, cache_dir

    tables = []
    for path in glob.glob(os.path.join(cache_dir(root), "cost-*.json")):
        try:
            table = CostTable.load(path)
        except (OutdatedFormat, OSError, ValueError, KeyError, TypeError):
            continue
        if table.key is not None and table.key.model == model and table.key.drafter == drafter:
            tables.append((os.path.getmtime(path), table))
    return [t for _, t in sorted(tables, key=lambda item: -item[0])]


def show(model: str, drafter: str, root: str | None) -> int:
    from sparkserve.spec_decode.cost_model import cache_dir

    tables = cached_tables(model, drafter, root)
    if not tables:
        print(f"no cached table for model {model!r} with drafter {drafter!r} under {cache_dir(root)}")
        return 1
    for table in tables:
        print(f"setup: {json.dumps(table.key.__dict__)}")
        print(format_table(table))
    return 0


def run(args: argparse.Namespace) -> int:
    from sparkserve.assets import demo_speculative_config
    from sparkserve.engine.args import build_engine_config
    spec = args.speculative_config if args.speculative_config is not None else \
        (demo_speculative_config() if args.model is None else None)
    # The engine itself must not profile (verify "fixed"); the key ignores the planner anyway.
    cfg = build_engine_config(args.model, dtype=args.dtype, device=args.device, num_threads=args.num_threads,
                              attention_backend=args.attention_backend, max_num_seqs=args.max_num_seqs,
                              max_num_batched_tokens=args.max_num_batched_tokens,
                              speculative_config={**(spec or {}), "verify": "fixed"})
    if args.show:
        return show(cfg.model.model, cfg.spec.model or cfg.spec.method, args.cache_dir)
    from sparkserve.engine.engine import Engine
    from sparkserve.engine.spec_control import cost_key
    from sparkserve.spec_decode.profile import profile_runner

    print("building the engine (model, KV cache, drafter) ...", flush=True)
    engine = Engine(cfg)
    key = cost_key(cfg.spec, engine.runner, cfg.model.model, cfg.scheduler.max_num_batched_tokens)
    print(f"setup: {json.dumps(key.__dict__)}")
    print(f"profiling for up to {args.time_limit:g} s ...", flush=True)
    table = profile_runner(engine.runner, cfg.scheduler.max_num_batched_tokens, args.max_num_seqs,
                           args.time_limit, key=key)
    print(format_table(table))
    if not args.no_save:
        print(f"saved {table.save_cached(args.cache_dir)}")
    if args.out:
        print(f"wrote {table.save(args.out)}")
    return 0
