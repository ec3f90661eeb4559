"""PNG plots of an invocation (matplotlib, an optional dependency: ``pip install matplotlib``):
throughput vs tok/s/user (DSpark Fig. 7), mean verify length vs load (Fig. 8), latency CDFs."""
from __future__ import annotations

import os

from sparkserve.benchmark.frontier import SPEED_KEY, THROUGHPUT_KEY
from sparkserve.benchmark.report import aggregate


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("plots need matplotlib: pip install matplotlib (or pass --no-plots)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(doc: dict, out_dir: str) -> list[str]:
    """Writes the plots into ``out_dir``; returns their paths."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, runs in doc["setups"].items():
        rows = aggregate(runs)
        ax.plot([r[SPEED_KEY] for r in rows], [r[THROUGHPUT_KEY] for r in rows], "o-", label=name)
        for r in rows:
            ax.annotate(r["load"], (r[SPEED_KEY], r[THROUGHPUT_KEY]), fontsize=6, alpha=0.7)
    for floor in doc["config"].get("min_tok_s_user") or ():
        ax.axvline(floor, color="gray", ls=":", lw=1)
    ax.set(xlabel="median tok/s/user", ylabel="output tok/s", title="throughput vs per-user speed")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir, "frontier.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    drew = False
    for name, runs in doc["setups"].items():
        rows = [r for r in aggregate(runs) if r.get("spec_decode_mean_verify_length") is not None]
        if rows:
            drew = True
            ax.plot([r["load"] for r in rows], [r["spec_decode_mean_verify_length"] for r in rows], "o-", label=name)
    if drew:
        ax.set(xlabel="load", ylabel="mean verify length (drafts/round)", title="verify length vs load")
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        paths.append(_save(fig, out_dir, "verify_length.png"))
    else:
        plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in zip(axes, ("ttfts", "tpots", "e2els"), ("TTFT", "TPOT", "E2E latency")):
        for name, runs in doc["setups"].items():
            for r in runs:
                vals = sorted(v * 1e3 for v in r.get(key, ()) if v)
                if vals:
                    ax.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))],
                            label=f"{name} {r['load']}" + (f" #{r['repeat']}" if r.get("repeat") else ""))
        ax.set(xlabel=f"{title} (ms)", ylabel="fraction of requests", title=f"{title} CDF")
        ax.set_xscale("log")
    axes[0].legend(fontsize=6)
    paths.append(_save(fig, out_dir, "latency_cdf.png"))
    return paths


def _save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
