"""The demo tokenizer: deterministic, lossless, and loadable by tokenizers and transformers."""

import os
import subprocess
import sys

import pytest

from sparkserve.demo.tokenizer_build import (CHAT_TEMPLATE, SPECIAL_TOKENS, render_prompt, save_tokenizer,
                                             special_token_ids, train_tokenizer)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = [f"user\nWhat is {i} + {i * 7}?" for i in range(200)] + [
    "assistant\ndef add(a, b):\n    \"\"\"Return a + b.\"\"\"\n    return a + b\n",
    "assistant\nThe `with` statement wraps a block with a context manager. Ünïcode ✓ 🎉\n\n\ttab",
] * 20


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(TEXTS, 400), str(d), model_max_length=512)
    return d


def test_same_texts_give_byte_identical_files(tmp_path, tok_dir):
    """Trained again in another process (Rust hash maps are seeded per process)."""
    code = ("import sys; from tests.demo.test_tokenizer import TEXTS; from sparkserve.demo.tokenizer_build "
            "import save_tokenizer, train_tokenizer; save_tokenizer(train_tokenizer(TEXTS, 400), sys.argv[1], 512)")
    env = {**os.environ, "PYTHONHASHSEED": "7", "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=ROOT)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (tok_dir / name).read_bytes()


def test_special_tokens_and_round_trip(tok_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    assert special_token_ids(tok) == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for text in TEXTS[-2:] + ["  two  spaces\n\n  and more  ", "x" * 50, "naïve café 12345"]:
        assert tok.decode(tok.encode(text).ids) == text
    assert [t for t in tok.encode("1234").tokens] == ["1", "2", "3", "4"]  # digits one by one
    ids = tok.encode(render_prompt("hi")).ids
    assert ids[0] == 1 and ids.count(2) == 1  # <|im_start|> ... <|im_end|> as single tokens


def test_transformers_loads_it_with_chat_template(tok_dir):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token_id == 0 and tok.mask_token_id == 3 and tok.bos_token is None
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == render_prompt("What is 2 + 3?")
    assert tok.decode(tok("  keep   spaces\n")["input_ids"]) == "  keep   spaces\n"


def test_sparkserve_tokenizer_renders_the_same_template(tok_dir):
    from sparkserve.models.tokenizer import Tokenizer

    tok = Tokenizer(str(tok_dir))
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == render_prompt("x")
