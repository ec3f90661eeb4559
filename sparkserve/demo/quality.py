"""Objective quality figures of a demo model, measured with sparkserve's own engine at greedy decoding.

    python -m sparkserve.demo.quality [--model sparkserve/assets/demo] [--corpus runs/demo/corpus] [--write-report]

- math: share of held-out problems whose ``\\boxed{}`` answer equals the reference;
- code: share of held-out answers whose code (the ```python fence, or the whole answer without one)
  parses with ``ast.parse``;
- samples: the first three held-out prompts of each domain and the model's greedy answers.

The held-out prompts come from the build's corpus (``--corpus``, its test split) when it exists, else
from the model's own ``demo-{math,code,chat}.jsonl`` (the held-out prompts every exported demo model
ships, so a fresh clone works). The CLI prints the figures; ``--write-report`` merges them (and the
samples) into ``MODEL/demo_report.json``, ``--samples-md`` writes the samples as markdown. The full
build runs the same evaluation after export.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys

from sparkserve.demo.corpus_types import Example

BOXED = re.compile(r"\\boxed\{([^}]*)\}")
FENCE_OPEN = "```python\n"


def boxed_correct(text: str, reference: str) -> bool:
    m = BOXED.search(text)
    return bool(m and m.group(1).strip() == reference.strip())


def extract_code(text: str) -> str:
    """The code of an answer: the body of its first ```python fence (to the end if never closed)."""
    start = text.find(FENCE_OPEN)
    if start < 0:
        return text
    body = text[start + len(FENCE_OPEN):]
    end = body.find("```")
    return body if end < 0 else body[:end]


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def shipped_examples(model_dir: str) -> list[Example]:
    """The held-out prompts an exported demo model ships (``demo-{domain}.jsonl``: turns + reference)."""
    examples = []
    for domain in ("math", "code", "chat"):
        path = os.path.join(model_dir, f"demo-{domain}.jsonl")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    examples.append(Example(domain, row["turns"][0], "", str(row["reference"]), os.path.basename(path)))
    return examples


def _pool(test: list[Example], domain: str, n: int) -> list[Example]:
    return [ex for ex in test if ex.domain == domain][:n]


def math_accuracy_of(texts: list[str], pool: list[Example]) -> dict:
    correct = sum(boxed_correct(t, ex.reference) for t, ex in zip(texts, pool))
    return {"prompts": len(texts), "correct": correct, "accuracy": round(correct / max(len(texts), 1), 4)}


def code_parse_rate_of(texts: list[str]) -> dict:
    ok = sum(parses(extract_code(t)) for t in texts)
    return {"prompts": len(texts), "parsed": ok, "parse_rate": round(ok / max(len(texts), 1), 4)}


def evaluate_quality(generate, test: list[Example], n: int = 100, num_samples: int = 3) -> dict:
    """`generate(prompts: list[str], max_tokens) -> list[str]` maps rendered prompts to greedy answers."""
    from sparkserve.demo.tokenizer_build import render_prompt

    def run(pool, max_tokens):
        return generate([render_prompt(ex.prompt) for ex in pool], max_tokens)

    math_pool, code_pool = _pool(test, "math", n), _pool(test, "code", n)
    math_texts, code_texts = run(math_pool, 200), run(code_pool, 512)
    samples = {"math": [(ex.prompt, t) for ex, t in zip(math_pool, math_texts)][:num_samples],
               "code": [(ex.prompt, t) for ex, t in zip(code_pool, code_texts)][:num_samples]}
    chat_pool = _pool(test, "chat", num_samples)
    samples["chat"] = list(zip([ex.prompt for ex in chat_pool], run(chat_pool, 160)))
    return {"math_accuracy": math_accuracy_of(math_texts, math_pool),
            "code_parse": code_parse_rate_of(code_texts),
            "samples": {d: [{"prompt": p, "answer": a} for p, a in s] for d, s in samples.items()}}


def engine_generate(model_dir: str, num_threads: int = 1):
    """A greedy `generate` through sparkserve's `LLM` on the exported model directory."""
    from sparkserve.engine.llm import LLM
    from sparkserve.sampling_params import SamplingParams

    with open(os.path.join(model_dir, "config.json")) as f:
        max_len = min(1024, json.load(f)["max_position_embeddings"])
    llm = LLM(model_dir, dtype="float32", device="cpu", seed=0, max_model_len=max_len, num_threads=num_threads)

    def generate(prompts: list[str], max_tokens: int) -> list[str]:
        room = [max_len - len(llm.tokenizer.encode(p)) for p in prompts]  # a tiny model's context is short
        outs = llm.generate(prompts, [SamplingParams(temperature=0.0, max_tokens=max(1, min(max_tokens, r)))
                                      for r in room])
        return [o.outputs[0].text for o in outs]

    return generate


def samples_markdown(samples: dict) -> str:
    lines = []
    for domain, items in samples.items():
        lines.append(f"#### {domain}\n")
        for s in items:
            lines += [f"**Prompt:** {s['prompt']}\n", "```text", s["answer"].rstrip(), "```\n"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from sparkserve.demo import corpus as corpus_mod
    from sparkserve.demo.build import default_export_dir

    ap = argparse.ArgumentParser(description="Math accuracy, code parse rate and samples of a demo model.")
    ap.add_argument("--model", default=default_export_dir())
    ap.add_argument("--corpus", default=os.path.join("runs", "demo", "corpus"),
                    help="the build's corpus directory (its test split holds the references); when it has no "
                         "test.jsonl, the model's shipped demo-*.jsonl prompts are used")
    ap.add_argument("--num-prompts", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples-md", default=None, help="also write the samples as markdown here")
    ap.add_argument("--write-report", action="store_true", help="merge the figures into MODEL/demo_report.json")
    args = ap.parse_args(argv)
    if os.path.exists(os.path.join(args.corpus, "test.jsonl")):
        test = corpus_mod.read_split(args.corpus, "test")
    else:
        test = shipped_examples(args.model)
        if not test:
            ap.error(f"no {os.path.join(args.corpus, 'test.jsonl')} and no demo-*.jsonl in {args.model}")
        print(f"no {os.path.join(args.corpus, 'test.jsonl')}: using the held-out prompts shipped in {args.model}",
              file=sys.stderr)
    quality = evaluate_quality(engine_generate(args.model, args.threads), test, args.num_prompts)
    if args.write_report:
        path = os.path.join(args.model, "demo_report.json")
        report = json.load(open(path)) if os.path.exists(path) else {}
        report.update(quality)
        with open(path, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
            f.write("\n")
    if args.samples_md:
        with open(args.samples_md, "w") as f:
            f.write(samples_markdown(quality["samples"]))
    print(json.dumps({k: quality[k] for k in ("math_accuracy", "code_parse")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
