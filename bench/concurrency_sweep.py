"""Verify-length planners under load: the paper's Figures 7 and 8 on this machine.

    python bench/concurrency_sweep.py [--model DIR] [--drafter DIR] [--concurrency 1 2 4 8 16 32 64]
        [--repeats 3] [--max-tokens 96] [--out bench/results/concurrency_sweep]

For each setup (no speculation; DSpark verifying a fixed k = 1, 3 or gamma drafts; DSpark with the
threshold, causal and lagged planners, the last two with and without the draft gate) and each
concurrency c, c closed-loop clients keep one request each in flight (prompts cycled from
demo-math, demo-code and demo-chat, mixed) until max(2c, 16)
requests have finished; repeated ``--repeats`` times, medians reported. One engine per setup, all
alive in one process, and the runs interleave (per concurrency and repeat, each setup in turn), so
every ratio compares runs taken minutes apart at most on the same machine state.

Writes ``sweep.json``, ``sweep.md`` (table + ratios vs no speculation), ``frontier.png`` (output
tok/s vs p50 tok/s/user, Figure 7) and ``verify_length.png`` (mean verify length vs c, Figure 8).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.common import load_prompts, print_table  # noqa: E402
from bench.load import run_closed_loop  # noqa: E402

DATASETS = ("demo-math", "demo-code", "demo-chat")


def setups(drafter: str, gamma: int, threshold: float) -> dict[str, dict | None]:
    """name -> speculative_config (None: no speculation)."""
    base = {"method": "dspark", "model": drafter, "num_speculative_tokens": gamma}
    out: dict[str, dict | None] = {"none": None}
    for k in sorted({1, 3, gamma}):
        out[f"fixed-{k}"] = {**base, "verify": "fixed", "verify_k": k}
    out["threshold"] = {**base, "verify": "threshold", "confidence_threshold": threshold}
    out["causal"] = {**base, "verify": "causal"}
    out["lagged"] = {**base, "verify": "lagged"}
    # the planners alone, drafting on every step (the draft gate off: spec_decode/draft_gate.py)
    out["causal-nogate"] = {**base, "verify": "causal", "draft_gate": False}
    out["lagged-nogate"] = {**base, "verify": "lagged", "draft_gate": False}
    return out


def mixed_prompts(tokenizer, per_set: int) -> list[str]:
    sets = [load_prompts(name, per_set) for name in DATASETS]
    mixed = [p for group in zip(*sets) for p in group]  # math, code, chat, math, ...
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in mixed]


def sweep(engines: dict, prompts, params, concurrency: list[int], repeats: int) -> list[dict]:
    """Interleaved: for each concurrency and repeat, every setup runs once in turn, so slow drift of
    the machine's speed (±20% over minutes on this shared VM) lands on all setups alike; the turn order
    rotates by one setup per repeat, so no setup always runs first (cold caches) or last."""
    rows = []
    names = list(engines)
    for c in concurrency:
        runs: dict[str, list] = {name: [] for name in engines}
        errors: dict[str, list] = {name: [] for name in engines}
        for rep in range(repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                llm = engines[name]
                runs[name].append(run_closed_loop(llm.engine, prompts, params, c, max(2 * c, 16)))
                errors[name].append(cost_model_error(llm.engine))
        rows += [summarise(name, c, runs[name], errors[name]) for name in engines]
    order = list(engines)
    return sorted(rows, key=lambda r: (order.index(r["setup"]), r["concurrency"]))


def cost_model_error(engine) -> float | None:
    """The live step-time prediction error (the /metrics value) after a run; None without a cost table."""
    table = engine.spec_control.stats().get("cost_table")
    return None if table is None else table["prediction_error"]


def summarise(name: str, c: int, runs: list, errors: list) -> dict:
    """Medians over the repeats of one setup at one concurrency."""
    row = {"setup": name, "concurrency": c,
           "throughput_tok_s": statistics.median(r.throughput for r in runs),
           "p50_user_tok_s": statistics.median(r.p50_user_tok_s for r in runs),
           "mean_verify_length": statistics.median(r.mean_verify_length for r in runs),
           "tau": statistics.median(r.mean_acceptance_length for r in runs),
           "cost_model_error": max(errors) if all(e is not None for e in errors) else None,
           "runs": [{"throughput_tok_s": r.throughput, "p50_user_tok_s": r.p50_user_tok_s} for r in runs]}
    print(f"{name:>13} c={c:<3d} {row['throughput_tok_s']:8.1f} tok/s  {row['p50_user_tok_s']:7.1f} tok/s/user  "
          f"verify {row['mean_verify_length']:.2f}  tau {row['tau']:.2f}"
          + ("" if row["cost_model_error"] is None else f"  cost-model error {row['cost_model_error']:.3f}"), flush=True)
    return row


def with_ratios(rows: list[dict]) -> list[dict]:
    base = {r["concurrency"]: r for r in rows if r["setup"] == "none"}
    for r in rows:
        b = base.get(r["concurrency"])
        r["user_vs_none"] = r["p50_user_tok_s"] / b["p50_user_tok_s"] if b else float("nan")
        r["throughput_vs_none"] = r["throughput_tok_s"] / b["throughput_tok_s"] if b else float("nan")
    return rows


def plot(rows: list[dict], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["setup"] for r in rows))
    color = {n: f"C{i % 10}" for i, n in enumerate(names)}  # one colour per setup in both plots
    fig, ax = plt.subplots(figsize=(7, 5))
    for n in names:
        pts = [r for r in rows if r["setup"] == n]
        ax.plot([r["p50_user_tok_s"] for r in pts], [r["throughput_tok_s"] for r in pts], marker="o", label=n,
                color=color[n])
        for r in pts:
            ax.annotate(str(r["concurrency"]), (r["p50_user_tok_s"], r["throughput_tok_s"]), fontsize=6)
    frontier = _save(fig, ax, os.path.join(out_dir, "frontier.png"), "p50 output tok/s per user",
                     "output tok/s (all users)", "Throughput vs per-user speed (labels: concurrency)")
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in names:
        if n == "none":
            continue
        pts = [r for r in rows if r["setup"] == n]
        ax.plot([r["concurrency"] for r in pts], [r["mean_verify_length"] for r in pts], marker="o", label=n,
                color=color[n])
    ax.set_xscale("log", base=2)
    verify = _save(fig, ax, os.path.join(out_dir, "verify_length.png"), "concurrency",
                   "mean verified drafts per request-step", "Verify length vs load")
    return [frontier, verify]


def _save(fig, ax, path: str, xlabel: str, ylabel: str, title: str) -> str:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def markdown(rows: list[dict], meta: dict) -> str:
    head = ["setup", "c", "output tok/s", "p50 tok/s/user", "mean verify len", "tau", "tok/s/user vs none",
            "tok/s vs none", "cost-model error (max)"]
    body = [[r["setup"], r["concurrency"], r["throughput_tok_s"], r["p50_user_tok_s"], r["mean_verify_length"],
             r["tau"], r["user_vs_none"], r["throughput_vs_none"],
             "-" if r.get("cost_model_error") is None else r["cost_model_error"]] for r in rows]
    return (f"Setup: `{json.dumps(meta)}`\n\n" + print_table(head, body, echo=False) + "\n\n"
            + goals(rows) + "\n")


def goals(rows: list[dict]) -> str:
    """The issue's goals per concurrency: each scheduled setup's p50 tok/s/user against no speculation
    and against the best fixed-k setup at that concurrency."""
    by_c: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_c.setdefault(r["concurrency"], {})[r["setup"]] = r
    scheduled = [n for n in ("causal", "lagged", "causal-nogate", "lagged-nogate") if any(n in v for v in by_c.values())]
    head = ["c", "best fixed-k (tok/s/user)"] + [f"{n} vs none" for n in scheduled] + \
        [f"{n} vs best fixed" for n in scheduled]
    body = []
    for c, setups in sorted(by_c.items()):
        fixed = [r for n, r in setups.items() if n.startswith("fixed-")]
        best = max(fixed, key=lambda r: r["p50_user_tok_s"]) if fixed else None
        none = setups.get("none")
        line = [c, f"{best['setup']} ({best['p50_user_tok_s']:.1f})" if best else "-"]
        line += [setups[n]["p50_user_tok_s"] / none["p50_user_tok_s"] if n in setups and none else float("nan")
                 for n in scheduled]
        line += [setups[n]["p50_user_tok_s"] / best["p50_user_tok_s"] if n in setups and best else float("nan")
                 for n in scheduled]
        body.append(line)
    return "Goals (ratios of p50 tok/s/user):\n\n" + print_table(head, body, echo=False)


def main(argv=None) -> None:
    from sparkserve.assets import demo_drafter_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="target (default: the demo model)")
    ap.add_argument("--drafter", default=None, help="DSpark drafter (default: the demo model's shipped one)")
    ap.add_argument("--setups", nargs="+", default=None, help="subset of the setup names")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=None, help="default: the model's generation_config")
    ap.add_argument("--threshold", type=float, default=0.5, help="confidence cut of the threshold planner")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kv-cache-bytes", type=int, default=512 << 20, help="per engine (they are all alive at once)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "concurrency_sweep"))
    ap.add_argument("--render", action="store_true", help="only re-render sweep.md and the plots from OUT/sweep.json")
    ap.add_argument("--merge", action="store_true",
                    help="replace the rows of the setups run now in OUT/sweep.json, keep the others "
                    "(rerun 'none' with them: ratios are then taken within this run)")
    args = ap.parse_args(argv)
    if args.render:
        with open(os.path.join(args.out, "sweep.json")) as f:
            saved = json.load(f)
        return write_outputs(saved["rows"], saved["meta"], args.out)
    from sparkserve import LLM, SamplingParams

    drafter = args.drafter or demo_drafter_path()
    if drafter is None:
        raise SystemExit("no DSpark drafter: pass --drafter DIR (or build them: sparkserve demo drafters)")
    with open(os.path.join(drafter, "config.json")) as f:
        gamma = int(json.load(f)["block_size"])
    all_setups = setups(drafter, gamma, args.threshold)
    chosen = args.setups or list(all_setups)
    base = LLM(args.model, num_threads=args.threads)
    prompts = mixed_prompts(base.tokenizer, 64)
    model_dir = base.engine.config.model.model
    del base
    from sparkserve.train.drafter.data import target_sampling

    gen = target_sampling(model_dir, temperature=args.temperature)
    params = SamplingParams(temperature=gen["temperature"], top_p=gen["top_p"], top_k=gen["top_k"],
                            max_tokens=args.max_tokens, seed=0)
    meta = {"model": args.model or "demo", "drafter": drafter, "gamma": gamma, "temperature": params.temperature,
            "top_p": params.top_p, "top_k": params.top_k, "max_tokens": args.max_tokens, "repeats": args.repeats,
            "threads": args.threads}
    engines = {name: LLM(args.model, speculative_config=all_setups[name], num_threads=args.threads,
                         max_num_seqs=max(args.concurrency), kv_cache_memory_bytes=args.kv_cache_bytes)
               for name in chosen}  # all alive at once: the runs interleave
    rows = sweep(engines, prompts, params, args.concurrency, args.repeats)
    del engines
    if args.merge and os.path.exists(os.path.join(args.out, "sweep.json")):
        with open(os.path.join(args.out, "sweep.json")) as f:
            saved = json.load(f)
        meta = {**saved["meta"], "merged": sorted(set(saved["meta"].get("merged", [])) | set(chosen))}
        rows = [r for r in saved["rows"] if r["setup"] not in chosen] + rows
        order = {name: i for i, name in enumerate(all_setups)}
        rows.sort(key=lambda r: (order.get(r["setup"], len(order)), r["concurrency"]))
    rows = with_ratios(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    write_outputs(rows, meta, args.out)


def write_outputs(rows: list[dict], meta: dict, out_dir: str) -> None:
    md = markdown(rows, meta)
    with open(os.path.join(out_dir, "sweep.md"), "w") as f:
        f.write(md)
    print(md)
    print("plots:", ", ".join(plot(rows, out_dir)))


if __name__ == "__main__":
    main()
