"""Workloads: prompt sets (multi-turn included), random lengths, shared prefixes, seeded."""
import pytest

from sparkserve.benchmark.workloads import (as_text, dataset_workload, load_tokenizer, random_workload,
                                            read_dataset)
from tests.benchmark.conftest import MULTI_TURN


def test_random_lengths_and_seed():
    convs = random_workload(200, input_len=40, output_len=20, range_ratio=0.5, seed=1)
    ins = [len(c.turns[0]) for c in convs]
    outs = [c.max_tokens[0] for c in convs]
    assert min(ins) >= 20 and max(ins) <= 60 and len(set(ins)) > 10
    assert min(outs) >= 10 and max(outs) <= 30
    assert random_workload(200, 40, 20, 0.5, seed=1) == convs
    fixed = random_workload(10, 16, 8, 0.0, seed=2)
    assert {len(c.turns[0]) for c in fixed} == {16} and {c.max_tokens[0] for c in fixed} == {8}


def test_shared_prefix():
    convs = random_workload(8, input_len=10, output_len=4, range_ratio=0.0, seed=0, prefix_len=32, num_prefixes=2)
    heads = [tuple(c.turns[0][:32]) for c in convs]
    assert len(set(heads)) == 2 and heads[0] == heads[2] == heads[4] and heads[0] != heads[1]
    assert all(len(c.turns[0]) == 42 for c in convs)


def test_datasets_multi_turn_and_output_lengths():
    mt = dataset_workload(MULTI_TURN, 4, 32, seed=0)
    assert all(len(c.turns) == 2 and c.max_tokens == [32, 32] for c in mt)
    assert dataset_workload(MULTI_TURN, 4, 32, seed=0) == mt  # seeded
    assert all(len(c.turns) == 1 for c in dataset_workload(MULTI_TURN, 3, 8, seed=0, max_turns=1))
    tok = load_tokenizer(None)
    chat = dataset_workload("demo-chat", 3, None, seed=0, tokenizer=tok)  # reference answers' token counts
    refs = {r["turns"][0]: len(tok.encode(r["reference"]).ids) for r in read_dataset("demo-chat")}
    assert [c.max_tokens[0] for c in chat] == [refs[c.turns[0]] for c in chat]
    demo = read_dataset("demo")
    assert len(demo) == 3 * min(len(read_dataset(n)) for n in ("demo-math", "demo-code", "demo-chat"))
    assert isinstance(as_text(random_workload(1, 8, 4, 0.0, 0), tok)[0].turns[0], str)
    with pytest.raises(ValueError, match="no prompt set"):
        read_dataset("no-such-set")
