"""`sparkserve demo build`: corpus -> tokenizer -> train (resumable) -> evaluate -> export.

Work directory layout (`--out`, default `runs/demo` or `runs/demo-quick`):

    manifest.json          recipe + seed + interpreter; a rerun must match it
    corpus/{train,validation,test}.jsonl
    tokenizer/             tokenizer.json, tokenizer_config.json
    checkpoints/step_*/    resumable training state (see sparkserve/train/lm/checkpoint.py)
    metrics.jsonl          training log records
    model/                 the exported HF model directory (see export.py)

Rerunning the same command resumes: finished stages are reused, training continues from the newest
checkpoint. At the end `model/` is copied to the export directory (sparkserve/assets/demo for FULL).
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch

from sparkserve.demo import corpus as corpus_mod
from sparkserve.demo.corpus_types import Example
from sparkserve.demo.export import copy_export, export_model, write_prompt_sets
from sparkserve.demo.quality import engine_generate, evaluate_quality
from sparkserve.demo.recipe import Recipe
from sparkserve.demo.tokenizer_build import (IM_END, render_prompt, save_tokenizer, special_token_ids,
                                             train_tokenizer)
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.models.qwen3 import Qwen3ForCausalLM
from sparkserve.train.lm.data import Document, PackedLoader, encode_chat
from sparkserve.train.lm.evaluate import greedy_generate, perplexity_by_domain
from sparkserve.train.lm.trainer import TrainConfig, train


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def manifest(recipe: Recipe, seed: int) -> dict:
    return {"recipe": recipe.to_json(), "seed": seed, "python": platform.python_version(),
            "torch": torch.__version__.split("+")[0]}


def check_manifest(out_dir: str, expected: dict) -> None:
    path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)
        if found != expected:
            raise SystemExit(f"{out_dir} was built with a different recipe/seed/interpreter; use a fresh --out.\n"
                             f"found:    {json.dumps(found, sort_keys=True)}\nexpected: {json.dumps(expected, sort_keys=True)}")
        return
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)


def stage_corpus(out_dir: str, recipe: Recipe, seed: int) -> str:
    corpus_dir = os.path.join(out_dir, "corpus")
    if all(os.path.exists(os.path.join(corpus_dir, f"{s}.jsonl")) for s in corpus_mod.SPLITS):
        log(f"corpus: reusing {corpus_dir}")
        return corpus_dir
    splits = corpus_mod.build_corpus(recipe.corpus, seed)
    corpus_mod.write_corpus(splits, corpus_dir + ".tmp")
    os.replace(corpus_dir + ".tmp", corpus_dir)
    log(f"corpus: {json.dumps(corpus_mod.summarize(splits))}")
    return corpus_dir


def tokenizer_texts(train: list[Example]):
    for ex in train:
        yield f"user\n{ex.prompt}"
        yield f"assistant\n{ex.response}"


def stage_tokenizer(out_dir: str, corpus_dir: str, recipe: Recipe) -> str:
    tok_dir = os.path.join(out_dir, "tokenizer")
    if os.path.exists(os.path.join(tok_dir, "tokenizer_config.json")):
        log(f"tokenizer: reusing {tok_dir}")
        return tok_dir
    tok = train_tokenizer(tokenizer_texts(corpus_mod.read_split(corpus_dir, "train")), recipe.vocab_size)
    save_tokenizer(tok, tok_dir + ".tmp", model_max_length=recipe.model.max_position_embeddings)
    os.replace(tok_dir + ".tmp", tok_dir)
    log(f"tokenizer: vocab {tok.get_vocab_size()} -> {tok_dir}")
    return tok_dir


def encode_split(tokenizer, examples: list[Example]) -> list[Document]:
    return [encode_chat(tokenizer, render_prompt(ex.prompt), ex.response + IM_END, ex.domain) for ex in examples]


def model_config(recipe: Recipe, vocab_size: int) -> DecoderConfig:
    m = recipe.model
    return DecoderConfig(vocab_size=vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                         num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                         num_key_value_heads=m.num_key_value_heads, head_dim=m.head_dim,
                         max_position_embeddings=m.max_position_embeddings, rope_theta=m.rope_theta,
                         rms_norm_eps=m.rms_norm_eps, tie_word_embeddings=m.tie_word_embeddings)


def init_model(cfg: DecoderConfig, seed: int, std: float) -> Qwen3ForCausalLM:
    """HF-style init: N(0, std) for embeddings and projections, ones for norms; seeded."""
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            torch.nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("norm.weight"):
            torch.nn.init.ones_(p)
        else:
            torch.nn.init.zeros_(p)
    return model


def generate_greedy(model_dir: str, model, tokenizer, stop_ids: set[int]):
    """A greedy `generate(prompts, max_tokens) -> texts` through sparkserve's engine (KV cache,
    batching) when it runs, else by plain recomputation with the in-memory model (slow; an
    evaluation fallback that covers the first 20 prompts)."""
    try:
        return engine_generate(model_dir, num_threads=torch.get_num_threads())
    except Exception as e:  # the engine is developed alongside; never lose a finished build to it
        log(f"engine generation failed ({type(e).__name__}: {e}); falling back to recomputation")

    def generate(prompts: list[str], max_tokens: int) -> list[str]:
        return [tokenizer.decode(greedy_generate(model, tokenizer.encode(p).ids, max_tokens, stop_ids))
                for p in prompts[:20]]

    return generate


def build(recipe: Recipe, seed: int, out_dir: str, export_dir: str | None, num_threads: int = 2) -> dict:
    from tokenizers import Tokenizer

    torch.set_num_threads(num_threads or 2)
    check_manifest(out_dir, manifest(recipe, seed))
    corpus_dir = stage_corpus(out_dir, recipe, seed)
    tok_dir = stage_tokenizer(out_dir, corpus_dir, recipe)
    tokenizer = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    special = special_token_ids(tokenizer)

    train_docs = encode_split(tokenizer, corpus_mod.read_split(corpus_dir, "train"))
    cfg = model_config(recipe, tokenizer.get_vocab_size())
    model = init_model(cfg, seed, recipe.init_std)
    num_params = sum(p.numel() for p in model.parameters())
    log(f"model: {num_params / 1e6:.2f}M parameters, {len(train_docs)} training documents, "
        f"{sum(len(d.token_ids) for d in train_docs) / 1e6:.2f}M tokens per epoch")
    loader = PackedLoader(train_docs, recipe.seq_len, recipe.batch_size, pad_id=special["<|endoftext|>"], seed=seed)
    tcfg = TrainConfig(max_steps=recipe.max_steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps, seed=seed,
                       num_threads=num_threads, log_every=10 if recipe.name == "full" else 5)
    summary = train(model, loader, tcfg, os.path.join(out_dir, "checkpoints"), log=log,
                    metrics_path=os.path.join(out_dir, "metrics.jsonl"))

    test = corpus_mod.read_split(corpus_dir, "test")
    ppl_docs = []
    for domain in corpus_mod.DOMAINS:
        ppl_docs += encode_split(tokenizer, [ex for ex in test if ex.domain == domain][:recipe.num_ppl_docs])
    report = {"recipe": recipe.name, "seed": seed, "num_parameters": num_params, "steps": summary["step"],
              "tokens_seen": summary["step"] * recipe.batch_size * recipe.seq_len,
              "trained_seq_len": recipe.seq_len,
              "test_perplexity": perplexity_by_domain(model, ppl_docs, recipe.seq_len, special["<|endoftext|>"])}
    log(f"test perplexity: {json.dumps(report['test_perplexity'])}")

    model_dir = os.path.join(out_dir, "model")
    export_model(model, cfg, tok_dir, special, model_dir)
    report["prompt_sets"] = write_prompt_sets(test, model_dir, recipe.num_eval_prompts, seed)
    write_report(report, model_dir, export_dir)  # the model ships even if the accuracy check fails
    generate = generate_greedy(model_dir, model, tokenizer, {special[IM_END], special["<|endoftext|>"]})
    report.update(evaluate_quality(generate, test, recipe.num_accuracy_prompts))
    log(f"quality (greedy, exported weights): math {json.dumps(report['math_accuracy'])}, "
        f"code {json.dumps(report['code_parse'])}")
    write_report(report, model_dir, export_dir)
    return report


def write_report(report: dict, model_dir: str, export_dir: str | None) -> None:
    with open(os.path.join(model_dir, "demo_report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    log(f"exported {model_dir}")
    if export_dir:
        copy_export(model_dir, export_dir)
        log(f"copied to {export_dir}")


def default_out_dir(quick: bool) -> str:
    return os.path.join("runs", "demo-quick" if quick else "demo")


def default_export_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo")


def export_target(args) -> str | None:
    """Where ``demo build``/``demo drafters`` copy their result: ``--export DIR``, the shipped assets only
    with ``--ship``, else nowhere (a rebuilt target must not silently replace the one the shipped
    drafters were trained against)."""
    return default_export_dir() if getattr(args, "ship", False) else getattr(args, "export", None)
