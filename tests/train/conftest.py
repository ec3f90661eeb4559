"""Shared fixtures of the drafter-toolchain tests: one tiny chat target (4-layer tied Qwen3, H=64,
V=320, with a BPE tokenizer and ChatML template), prompt files, and data regenerated from them."""
from __future__ import annotations

import json
import os

import pytest
import torch

from tests.models.hf_fixtures import make_hf_model

PROMPTS = [["What is 12 + 7?"], ["def add(a, b):", "and subtract?"], ["the quick brown fox"], ["hello world"],
           ["Step 1: 3 + 4"], ["lazy dog jumps over"], ["héllo wörld"], ["return a + b"]]


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def target(root) -> str:
    return make_hf_model(os.path.join(root, "target"), "qwen3", tied=True, seed=5, layers=4)


def write_prompts(path: str, prompts: list[list[str]]) -> str:
    with open(path, "w") as f:
        for turns in prompts:
            f.write(json.dumps({"turns": turns}) + "\n")
    return path


@pytest.fixture(scope="session")
def prompt_files(root) -> list[str]:
    return [write_prompts(os.path.join(root, "demo-a.jsonl"), PROMPTS[:5]),
            write_prompts(os.path.join(root, "demo-b.jsonl"), PROMPTS[5:])]


@pytest.fixture(scope="session")
def data_dir(root, target, prompt_files) -> str:
    from sparkserve.train.drafter.data import regenerate

    out = os.path.join(root, "data")
    regenerate(target, prompt_files, out, max_tokens=40, batch_size=4, temperature=0.8, log=lambda *_: None)
    return out


def state_of(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


@pytest.fixture(scope="session")
def random_drafter(root, target):
    """A random-init drafter per method (gamma 4, larger weights so drafts vary), written once."""
    from sparkserve.tools.init_drafter import init_drafter

    made: dict[str, str] = {}

    def get(method: str) -> str:
        if method not in made:
            made[method] = init_drafter(method, target, os.path.join(root, f"random-{method}"),
                                        num_speculative_tokens=4, num_layers=1 if method != "eagle3" else None,
                                        seed=7, init_std=0.3)
        return made[method]

    return get
