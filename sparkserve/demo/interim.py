"""Export the newest checkpoint of a demo build that is still training, as an *interim* demo model.

    python -m sparkserve.demo.interim [--out runs/demo] [--export sparkserve/assets/demo] [--no-accuracy]

Same files and report as the final export (``build.export``), with ``"interim": true`` and the step
reached, so `sparkserve launch` works while the full recipe is still running. The final build
overwrites it. Drafters must not be trained against an interim export.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_model as load_safetensors_into
from tokenizers import Tokenizer

from sparkserve.demo import corpus as corpus_mod
from sparkserve.demo.build import (default_export_dir, encode_split, generate_greedy, init_model, log, model_config,
                                   write_report)
from sparkserve.demo.quality import evaluate_quality
from sparkserve.demo.export import export_model, write_prompt_sets
from sparkserve.demo.recipe import FULL
from sparkserve.demo.tokenizer_build import IM_END, special_token_ids
from sparkserve.train.lm.checkpoint import latest_checkpoint
from sparkserve.train.lm.evaluate import perplexity_by_domain


def export_interim(out_dir: str, export_dir: str | None, seed: int = 0, accuracy: bool = True) -> dict:
    recipe = FULL
    ckpt = latest_checkpoint(os.path.join(out_dir, "checkpoints"))
    if ckpt is None:
        raise SystemExit(f"no checkpoint under {out_dir}/checkpoints")
    with open(os.path.join(ckpt, "state.json")) as f:
        step = json.load(f)["step"]
    tok_dir = os.path.join(out_dir, "tokenizer")
    tokenizer = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    special = special_token_ids(tokenizer)
    cfg = model_config(recipe, tokenizer.get_vocab_size())
    model = init_model(cfg, seed, recipe.init_std)
    load_safetensors_into(model, os.path.join(ckpt, "model.safetensors"))
    model.eval()
    test = corpus_mod.read_split(os.path.join(out_dir, "corpus"), "test")
    ppl_docs = []
    for domain in corpus_mod.DOMAINS:
        ppl_docs += encode_split(tokenizer, [ex for ex in test if ex.domain == domain][:recipe.num_ppl_docs])
    with torch.no_grad():
        ppl = perplexity_by_domain(model, ppl_docs, recipe.seq_len, special["<|endoftext|>"])
    report = {"recipe": recipe.name, "interim": True, "seed": seed, "checkpoint": os.path.basename(ckpt),
              "num_parameters": sum(p.numel() for p in model.parameters()), "steps": step,
              "planned_steps": recipe.max_steps, "tokens_seen": step * recipe.batch_size * recipe.seq_len,
              "trained_seq_len": recipe.seq_len, "test_perplexity": ppl}
    model_dir = os.path.join(out_dir, "model-interim")
    export_model(model, cfg, tok_dir, special, model_dir)
    report["prompt_sets"] = write_prompt_sets(test, model_dir, recipe.num_eval_prompts, seed)
    if accuracy:
        generate = generate_greedy(model_dir, model, tokenizer, {special[IM_END], special["<|endoftext|>"]})
        report.update(evaluate_quality(generate, test, recipe.num_accuracy_prompts))
    write_report(report, model_dir, export_dir)
    log(f"interim export of step {step}: {json.dumps(report)}")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join("runs", "demo"))
    ap.add_argument("--export", default=default_export_dir())
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    export_interim(args.out, args.export, accuracy=not args.no_accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
