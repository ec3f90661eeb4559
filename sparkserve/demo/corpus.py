"""The demo corpus: math, code and chat examples, split into train/validation/test.

The split of an example is a function of a hash of its user prompt alone, so it never depends on the
seed, the corpus size or the order of generation, and a prompt can never land in two splits.
Files are JSON lines with sorted keys: the same seed on the same interpreter gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from sparkserve.demo.corpus_chat import generate_chat
from sparkserve.demo.corpus_code import generate_code
from sparkserve.demo.corpus_math import generate_math
from sparkserve.demo.corpus_types import Example

SPLITS = ("train", "validation", "test")
DOMAINS = ("math", "code", "chat")
TEST_PERCENT, VALIDATION_PERCENT = 7, 3


@dataclass(frozen=True)
class CorpusSize:
    """How many examples to draw per domain; None takes every code/chat example the sources give."""

    num_math: int
    max_code: int | None
    max_chat: int | None


def split_of(prompt: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + VALIDATION_PERCENT:
        return "validation"
    return "train"


def build_corpus(size: CorpusSize, seed: int) -> dict[str, list[Example]]:
    """All three domains, deduplicated by prompt and split by prompt hash (order: math, code, chat)."""
    examples = (generate_math(size.num_math, seed) + generate_code(size.max_code, seed)
                + generate_chat(size.max_chat, seed))
    seen: set[str] = set()
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for ex in examples:
        if ex.prompt in seen:
            continue
        seen.add(ex.prompt)
        splits[split_of(ex.prompt)].append(ex)
    return splits


def write_corpus(splits: dict[str, list[Example]], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, examples in splits.items():
        with open(os.path.join(out_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps(ex.to_json(), ensure_ascii=False, sort_keys=True) + "\n")


def read_split(corpus_dir: str, split: str) -> list[Example]:
    with open(os.path.join(corpus_dir, f"{split}.jsonl"), encoding="utf-8") as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]


def summarize(splits: dict[str, list[Example]]) -> dict[str, dict[str, int]]:
    """{split: {domain: count}}."""
    return {s: {d: sum(ex.domain == d for ex in exs) for d in DOMAINS} for s, exs in splits.items()}
