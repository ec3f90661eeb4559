"""``sparkserve train eval``: drafters through the engine, as the paper reports them.

For every drafter, temperature and prompt file, the engine generates with a fixed verify length
(every draft up to gamma is verified) and ``rollouts.RoundRecorder`` records each round. The report
(``OUT/report.md``, ``OUT/report.json``, PNGs) holds:
- tau per dataset and drafter (Table 1 of the paper), and the mean over datasets;
- position-wise conditional acceptance cond@k (Figure 2), pooled over datasets;
- for drafters with a confidence head: per-position ECE / AUROC of the cumulative confidence before
  STS (T_k = 1) and after (the drafter's ``calibration.json``, if any), with reliability diagrams
  (Figure 6).
Prompts: the first user turn through the chat template (DeepSpec's protocol), seeded per prompt.
"""
from __future__ import annotations

import json
import os

import torch

from sparkserve.spec_decode.checkpoint import CALIBRATION_FILE, read_calibration
from sparkserve.train.drafter import metrics


def parse_drafter(spec: str) -> tuple[str, str]:
    """``METHOD=DIR`` -> (method, dir)."""
    method, sep, path = spec.partition("=")
    if not sep or method not in ("dspark", "dflash", "eagle3") or not path:
        raise ValueError(f"--drafter expects METHOD=DIR with METHOD one of dspark, dflash, eagle3; got {spec!r}")
    return method, path


def evaluate(target: str, drafters: list[tuple[str, str]], prompt_files: list[str], out_dir: str, *,
             temperatures=(1.0, 0.0), max_prompts: int | None = None, max_tokens: int = 256, seed: int = 0,
             log=print, **engine_kwargs) -> dict:
    from sparkserve import LLM
    from sparkserve.train.drafter.data import read_prompt_file
    from sparkserve.train.drafter.rollouts import (RoundRecorder, chat_prompt_ids, confidence_tensors, round_tensors,
                                                   run_prompts)

    os.makedirs(out_dir, exist_ok=True)
    datasets = {os.path.splitext(os.path.basename(p))[0]: read_prompt_file(p)[:max_prompts] for p in prompt_files}
    labels = _labels(drafters)
    report = {"target": target, "temperatures": list(temperatures), "datasets": list(datasets), "drafters": {}}
    for label, (method, path) in zip(labels, drafters):
        llm = LLM(target, seed=seed, speculative_config={"method": method, "model": path}, **engine_kwargs)
        recorder = RoundRecorder(llm)
        gamma = llm.engine.num_speculative_tokens
        temps = read_calibration(path)
        entry = {"method": method, "path": path, "gamma": gamma, "calibration_temperatures": temps,
                 "calibration_fitted_at": _fitted_at(path), "runs": {}}
        for t in temperatures:
            pooled, run = [], {"tau": {}, "rounds": {}}
            for name, prompts in datasets.items():
                ids = [chat_prompt_ids(llm.tokenizer, turns) for _, turns in prompts]
                rounds, _ = run_prompts(llm, recorder, ids, t, max_tokens, seed)
                run["tau"][name] = metrics.tau(round_tensors(rounds)[2]) if rounds else None
                run["rounds"][name] = len(rounds)
                pooled += rounds
            v, a, _ = round_tensors(pooled)
            run["tau_mean"] = _mean(run["tau"].values())
            run["cond_accept"], run["cond_accept_n"] = metrics.cond_accept(v, a, gamma)
            found = confidence_tensors(pooled, gamma)
            if found is not None:
                v, a, z = found
                run["calibration"] = {"before": metrics.calibration_summary(z, v, a),
                                      "after": metrics.calibration_summary(z, v, a, temps) if temps else None,
                                      "cross_fitted": cross_fitted_sts(z, v, a)}
                run["reliability"] = _reliability(z, v, a, temps)
            entry["runs"][_tkey(t)] = run
            log(f"eval {label} T={t}: tau {_fmt_map(run['tau'])}, cond@k {_fmt_list(run['cond_accept'])}")
        report["drafters"][label] = entry
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    report["plots"] = _plots(report, out_dir, log)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(render_markdown(report))
    log(f"wrote {out_dir}/report.md")
    return report


def _labels(drafters) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for method, path in drafters:
        seen[method] = seen.get(method, 0) + 1
        out.append(method if seen[method] == 1 else f"{method}-{os.path.basename(os.path.normpath(path))}")
    return out


def _fitted_at(path: str):
    file = os.path.join(path, CALIBRATION_FILE)
    if not os.path.exists(file):
        return None
    with open(file) as f:
        return json.load(f).get("serving_temperature")


def _tkey(t: float) -> str:
    return f"T={float(t):g}"


def _mean(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def cross_fitted_sts(z, v, a) -> dict:
    """ECE per position after STS fitted at *this* temperature, 2-fold: temperatures fitted on the
    even rounds are scored on the odd ones and vice versa (never on the rows they were fitted to).
    Returns {"ece": [per position, count-weighted over folds], "count": [...], "weighted": float}."""
    from sparkserve.train.drafter.calibrate import fit_sts

    gamma = z.shape[1]
    idx = torch.arange(z.shape[0])
    err, cnt = [0.0] * gamma, [0] * gamma
    for fold in (0, 1):
        fit, test = idx[idx % 2 == fold], idx[idx % 2 != fold]
        if len(fit) == 0 or len(test) == 0:
            continue
        temps = fit_sts(z[fit], v[fit], a[fit])["temperatures"]
        per = metrics.calibration_summary(z[test], v[test], a[test], temps)["per_position"]
        for k, r in enumerate(per):
            if r["count"] and r["ece"] == r["ece"]:
                err[k] += r["ece"] * r["count"]
                cnt[k] += r["count"]
    eces = [e / n if n else None for e, n in zip(err, cnt)]
    total = sum(cnt)
    return {"ece": eces, "count": cnt, "weighted": sum(err) / total if total else None}


def _reliability(z, v, a, temps) -> dict:
    gamma = z.shape[1]
    y, lab = metrics.prefix_labels(v, a, gamma)
    out = {}
    for tag, t in (("before", None), ("after", temps)):
        if tag == "after" and not t:
            continue
        p = metrics.cumulative_confidence(z, t)
        out[tag] = [metrics.reliability(p[:, k][lab[:, k]], y[:, k][lab[:, k]]) for k in range(gamma)]
    return out


def _fmt_map(d: dict) -> str:
    return ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in d.items())


def _fmt_list(xs) -> str:
    return "[" + ", ".join("-" if x is None else f"{x:.3f}" for x in xs) + "]"


def _cell(x, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def render_markdown(report: dict) -> str:
    lines = ["# Drafter evaluation\n", f"Target `{report['target']}`; fixed verify length (gamma drafts per "
             "round); tau counts the bonus/residual token.\n"]
    for tk in (_tkey(t) for t in report["temperatures"]):
        lines += [f"\n## {tk}\n"] + _tau_table(report, tk) + _cond_table(report, tk)
        for label, e in report["drafters"].items():
            cal = e["runs"][tk].get("calibration")
            if cal:
                lines += _calibration_table(label, cal, e.get("calibration_fitted_at"))
    if report.get("plots"):
        lines.append("\n## Plots\n")
        lines += [f"![{os.path.splitext(p)[0]}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _tau_table(report: dict, tk: str) -> list[str]:
    names = report["datasets"]
    out = ["### Mean acceptance length tau\n", _row(["drafter", *names, "mean"]), "|---" * (len(names) + 2) + "|"]
    for label, e in report["drafters"].items():
        run = e["runs"][tk]
        out.append(_row([label, *(_cell(run["tau"][d], 2) for d in names), _cell(run["tau_mean"], 2)]))
    return out


def _cond_table(report: dict, tk: str) -> list[str]:
    gamma = max(e["gamma"] for e in report["drafters"].values())
    out = ["\n### Position-wise conditional acceptance cond@k\n",
           _row(["drafter", *(f"k={k + 1}" for k in range(gamma))]), "|---" * (gamma + 1) + "|"]
    for label, e in report["drafters"].items():
        ca = e["runs"][tk]["cond_accept"]
        out.append(_row([label, *(_cell(ca[k] if k < len(ca) else None) for k in range(gamma))]))
    return out


def _calibration_table(label: str, cal: dict, fitted_at) -> list[str]:
    before = cal["before"]
    after = cal["after"] or {"per_position": [{}] * len(before["per_position"]), "weighted": {}}
    note = "no calibration.json" if not cal["after"] else f"STS fitted at T={fitted_at}"
    cv = cal.get("cross_fitted") or {"ece": [None] * len(before["per_position"]), "weighted": None}
    out = [f"\n### Confidence calibration: {label} ({note}; cumulative confidence vs prefix acceptance)\n",
           "The last ECE column refits STS at this temperature on half of the rounds and scores the other "
           "half (2-fold).\n",
           _row(["k", "rows", "ECE before", "ECE after STS", "ECE after STS at this T (held out)", "AUROC before",
                 "AUROC after"]), "|---" * 7 + "|"]
    for k, (b, a) in enumerate(zip(before["per_position"], after["per_position"])):
        out.append(_row([k + 1, b["count"], _cell(b["ece"], 4), _cell(a.get("ece"), 4), _cell(cv["ece"][k], 4),
                         _cell(b["auroc"]), _cell(a.get("auroc"))]))
    wb, wa = before["weighted"], after["weighted"]
    out.append(_row(["all (weighted)", before["count"], _cell(wb["ece"], 4), _cell(wa.get("ece"), 4),
                     _cell(cv["weighted"], 4), _cell(wb["auroc"]), _cell(wa.get("auroc"))]))
    return out


def _plots(report: dict, out_dir: str, log) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no PNG plots (pip install 'sparkserve[plots]')")
        return []
    files = []
    for t in report["temperatures"]:
        tk = _tkey(t)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for label, e in report["drafters"].items():
            ca = e["runs"][tk]["cond_accept"]
            ks = [k for k, c in enumerate(ca) if c is not None]
            ax.plot([k + 1 for k in ks], [ca[k] for k in ks], "o-", label=label)
        ax.set(xlabel="draft position k", ylabel="cond. acceptance", title=f"cond@k, {tk}", ylim=(0, 1.02))
        ax.legend()
        name = f"cond_accept_T{float(t):g}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(fig)
        files.append(name)
        for label, e in report["drafters"].items():
            rel = e["runs"][tk].get("reliability")
            if rel:
                files.append(_reliability_plot(plt, rel, e["runs"][tk]["calibration"], label, t, out_dir))
    return files


def _reliability_plot(plt, rel: dict, cal: dict, label: str, t: float, out_dir: str) -> str:
    gamma = len(rel["before"])
    cols = min(gamma, 4)
    rows = -(-gamma // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        if k >= gamma:
            ax.axis("off")
            continue
        ax.plot([0, 1], [0, 1], ":", color="gray")
        for tag, color in (("before", "tab:red"), ("after", "tab:blue")):
            if tag in rel and cal.get(tag):
                r, s = rel[tag][k], cal[tag]["per_position"][k]
                ax.plot(r["mean_pred"], r["mean_label"], "o-", color=color, ms=3,
                        label=f"{tag}: ECE {_cell(s['ece'], 3)}, AUROC {_cell(s['auroc'], 2)}")
        ax.set(title=f"k={k + 1}", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{label} reliability (cumulative confidence), T={float(t):g}")
    fig.tight_layout()
    name = f"reliability_{label}_T{float(t):g}.png"
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    return name
