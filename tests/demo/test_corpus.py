"""The demo corpus: deterministic, split without overlap, and correct where it can be checked."""

import ast
import os
import re
import subprocess
import sys

import pytest

from sparkserve.demo import corpus
from sparkserve.demo.corpus_math import MATH_SUFFIX, TEMPLATES, Problem, generate_math

SMALL = corpus.CorpusSize(num_math=300, max_code=60, max_chat=60)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_same_seed_gives_byte_identical_files(tmp_path):
    """Also across processes with different string-hash seeds (no set/dict-order dependence)."""
    corpus.write_corpus(corpus.build_corpus(SMALL, seed=3), str(tmp_path / "a"))
    code = ("import sys; from sparkserve.demo import corpus as c; "
            "c.write_corpus(c.build_corpus(c.CorpusSize(300, 60, 60), seed=3), sys.argv[1])")
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], check=True, env=env)
    for split in corpus.SPLITS:
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()


def test_different_seed_changes_math():
    assert [e.prompt for e in generate_math(50, 0)] != [e.prompt for e in generate_math(50, 1)]


def test_splits_do_not_overlap_and_follow_the_prompt_hash():
    splits = corpus.build_corpus(SMALL, seed=0)
    prompts = {name: {ex.prompt for ex in exs} for name, exs in splits.items()}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]
    for name, exs in splits.items():
        assert all(corpus.split_of(ex.prompt) == name for ex in exs)
    assert {ex.domain for ex in splits["train"]} == set(corpus.DOMAINS)


STEP = re.compile(r"^Step (\d+): .*, so (\d+) ([-+*/]) (\d+) = (\d+)\.$")


def test_math_solutions_are_arithmetically_correct():
    assert len(TEMPLATES) >= 30
    for ex in generate_math(2000, seed=0):
        assert ex.prompt.endswith(MATH_SUFFIX)
        *steps, last = ex.response.split("\n")
        assert 1 <= len(steps) <= 4
        for k, line in enumerate(steps, 1):
            m = STEP.match(line)
            assert m, line
            a, op, b, r = int(m[2]), m[3], int(m[4]), int(m[5])
            assert int(m[1]) == k
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}[op] == r
        assert last == f"The answer is \\boxed{{{ex.reference}}}." and ex.reference == str(r)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.__name__)
def test_every_template_keeps_numbers_small(template):
    import random

    rng = random.Random(template.__name__)
    for _ in range(300):
        p = Problem(rng)
        template(p)
        assert p.answer is not None and 0 <= p.answer < 1000


def test_code_answers_are_fenced_parseable_python():
    from sparkserve.demo.corpus_code import generate_code

    examples = generate_code(40, seed=0)
    assert len(examples) == 40
    for ex in examples:
        assert ex.prompt.startswith(("Write a Python", "Implement the Python"))
        assert ex.response.startswith("```python\n") and ex.response.endswith("\n```")
        ast.parse(ex.response[len("```python\n"):-len("```")])


def test_chat_answers_are_bounded_prose():
    from sparkserve.demo.corpus_chat import MAX_CHARS, generate_chat

    examples = generate_chat(40, seed=0)
    assert len(examples) == 40
    assert all(80 <= len(ex.response) <= MAX_CHARS + 200 for ex in examples)
    assert all(ex.prompt.endswith(("?", ".")) for ex in examples)
