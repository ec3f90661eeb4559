"""What to send: prompt sets (demo and shared eval sets, multi-turn included), random prompts with
length distributions, and a shared-prefix workload; output lengths fixed or from the dataset.

A workload is a list of ``Conversation``s: one user's turns, sent in order (turn i+1 carries the
server's reply to turn i). Random prompts are token ids; the completions endpoint sends them as
ids, the chat endpoint as their decoded text (``--tokenizer``, default the demo model's).
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

DEMO_SETS = ("demo-math", "demo-code", "demo-chat")


@dataclass
class Conversation:
    """One user's turns (text, or token ids for a single-turn random prompt) and max_tokens of each."""

    turns: list
    max_tokens: list[int]


def dataset_path(name: str) -> str:
    """A prompt set's file: a path, a demo set (``demo-chat``), or a shared eval set (``mt-bench``)."""
    if os.path.exists(name):
        return name
    from sparkserve.assets import ASSETS_DIR

    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.path.join(ASSETS_DIR, "demo"), os.path.join(here, "..", "..", "..", "shared", "eval_datasets"),
                 os.path.join(os.getcwd(), "..", "shared", "eval_datasets")):
        path = os.path.join(base, f"{name}.jsonl")
        if os.path.exists(path):
            return path
    raise ValueError(f"no prompt set {name!r}: give a .jsonl path, one of {', '.join(DEMO_SETS)}, 'demo' (all "
                     "three), or a shared eval set name (mt-bench, gsm8k, ...)")


def read_dataset(name: str) -> list[dict]:
    """``{"turns": [...], "reference"?: str}`` records; ``demo`` interleaves the three demo sets."""
    if name == "demo":
        sets = [read_dataset(n) for n in DEMO_SETS]
        return [rec for group in zip(*sets) for rec in group]
    with open(dataset_path(name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_tokenizer(path: str | None):
    """A ``tokenizers.Tokenizer`` from a directory or tokenizer.json (default: the demo model's)."""
    from tokenizers import Tokenizer

    if path is None:
        from sparkserve.assets import DEMO_MODEL_DIR as path
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return Tokenizer.from_file(path)


def dataset_workload(name: str, num: int, output_len: int | None, seed: int, tokenizer=None,
                     max_turns: int | None = None) -> list[Conversation]:
    """``num`` conversations drawn (seeded shuffle, cycled) from a prompt set. ``output_len`` None:
    each turn's max_tokens is its reference's token count (needs ``tokenizer``), else 256."""
    records = read_dataset(name)
    random.Random(seed).shuffle(records)
    out = []
    for i in range(num):
        rec = records[i % len(records)]
        turns = list(rec["turns"])[:max_turns]
        if output_len is not None:
            lens = [output_len] * len(turns)
        else:
            ref = rec.get("reference")
            n = len(tokenizer.encode(ref).ids) if ref and tokenizer is not None else 256
            lens = [max(1, n)] * len(turns)
        out.append(Conversation(turns, lens))
    return out


def sample_lengths(rng: random.Random, mean: int, range_ratio: float, num: int) -> list[int]:
    """Uniform integers in [mean (1 - r), mean (1 + r)], at least 1 (vLLM's random dataset)."""
    lo, hi = max(1, int(mean * (1 - range_ratio))), max(1, int(mean * (1 + range_ratio)))
    return [rng.randint(lo, hi) for _ in range(num)]


def random_workload(num: int, input_len: int, output_len: int, range_ratio: float, seed: int,
                    vocab: tuple[int, int] = (100, 8000), prefix_len: int = 0,
                    num_prefixes: int = 1) -> list[Conversation]:
    """Random token-id prompts. ``prefix_len`` > 0: each prompt starts with one of ``num_prefixes``
    shared random prefixes (the shared-prefix workload, which exercises the prefix cache)."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(*vocab) for _ in range(prefix_len)] for _ in range(num_prefixes)]
    ins = sample_lengths(rng, input_len, range_ratio, num)
    outs = sample_lengths(rng, output_len, range_ratio, num)
    convs = []
    for i in range(num):
        ids = prefixes[i % num_prefixes] + [rng.randrange(*vocab) for _ in range(ins[i])]
        convs.append(Conversation([ids], [outs[i]]))
    return convs


def as_text(conversations: list[Conversation], tokenizer) -> list[Conversation]:
    """Token-id turns decoded to text (for the chat endpoint)."""
    return [Conversation([tokenizer.decode(t) if isinstance(t, list) else t for t in c.turns], c.max_tokens)
            for c in conversations]
