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


def by_model(doc: dict) -> dict[str, list[str]]:
    """Served model -> its setups (one panel each: two targets' scales differ by 10x)."""
    groups: dict[str, list[str]] = {}
    for name in doc["setups"]:
        groups.setdefault(str(doc.get("models", {}).get(name, "")), []).append(name)
    return groups


def write_plots(doc: dict, out_dir: str) -> list[str]:
    """Writes the plots into ``out_dir``; returns their paths. A setup keeps its colour throughout."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    colour = {name: f"C{i % 10}" for i, name in enumerate(doc["setups"])}
    groups = by_model(doc)

    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    for ax, (model, names) in zip(axes[0], groups.items()):
        top_speed = 0.0
        for name in names:
            rows = aggregate(doc["setups"][name])
            top_speed = max([top_speed, *(r[SPEED_KEY] for r in rows)])
            ax.plot([r[SPEED_KEY] for r in rows], [r[THROUGHPUT_KEY] for r in rows], "o-", label=name,
                    color=colour[name])
            for r in rows:
                ax.annotate(r["load"], (r[SPEED_KEY], r[THROUGHPUT_KEY]), fontsize=6, alpha=0.7)
        for floor in doc["config"].get("min_tok_s_user") or ():
            if floor <= 1.2 * top_speed:  # a floor far right of every point would squash the panel
                ax.axvline(floor, color="gray", ls=":", lw=1)
        ax.set(xlabel="median tok/s/user", ylabel="output tok/s", title=f"throughput vs per-user speed\n{model}")
        ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir, "frontier.png"))

    spec_groups = {m: [n for n in names if any(r.get("spec_decode_mean_verify_length") is not None
                                               for r in doc["setups"][n])] for m, names in groups.items()}
    spec_groups = {m: names for m, names in spec_groups.items() if names}
    if spec_groups:
        fig, axes = plt.subplots(1, len(spec_groups), figsize=(6 * len(spec_groups), 4), squeeze=False)
        for ax, (model, names) in zip(axes[0], spec_groups.items()):
            for name in names:
                rows = [r for r in aggregate(doc["setups"][name])
                        if r.get("spec_decode_mean_verify_length") is not None]
                ax.plot([r["load"] for r in rows], [r["spec_decode_mean_verify_length"] for r in rows], "o-",
                        label=name, color=colour[name])
            ax.set(xlabel="load", ylabel="mean verify length (drafts/round)", title=f"verify length vs load\n{model}")
            ax.legend(fontsize=7)
            ax.tick_params(axis="x", labelsize=7, rotation=30)
        paths.append(_save(fig, out_dir, "verify_length.png"))

    # latency CDFs: per served model, at the heaviest load all its setups ran (repeats pooled)
    fig, axes = plt.subplots(len(groups), 3, figsize=(13, 4 * len(groups)), squeeze=False)
    for row, (model, names) in zip(axes, groups.items()):
        loads = [{r["load"] for r in doc["setups"][n]} for n in names]
        common = [r["load"] for r in doc["setups"][names[0]] if all(r["load"] in s for s in loads)]
        load = common[-1] if common else None
        for ax, key, title in zip(row, ("ttfts", "tpots", "e2els"), ("TTFT", "TPOT", "E2E latency")):
            for name in names:
                vals = sorted(v * 1e3 for r in doc["setups"][name] if r["load"] == load for v in r.get(key, ()) if v)
                if vals:
                    ax.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], color=colour[name], label=name)
            ax.set(xlabel=f"{title} (ms)", ylabel="fraction of requests", title=f"{title} CDF, {load}\n{model}")
            ax.set_xscale("log")
        row[0].legend(fontsize=7)
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
