"""The windowed incremental detokenizer releases exactly what decoding the whole output at every step
would release, step by step: same text, same hold-back of incomplete characters and possible stop
strings, same stop. Random token streams (invalid UTF-8 included) in random chunks, two tokenizers."""
import random

import pytest

from sparkserve.assets import demo_model_path
from sparkserve.engine.detokenizer import PROMPT_CONTEXT_TOKENS, IncrementalDetokenizer
from sparkserve.models.tokenizer import Tokenizer
from tests.models.hf_fixtures import add_tokenizer

STOPS = [[], ["o"], [" the", "dog"], ["e ", "e"], ["zz", "ö"], ["th", "the quick"]]


def full_decode_reference(tok, prompt, chunks, stop, include_stop, skip_special):
    """What each step releases when every step decodes the whole output (the plain definition)."""
    context = prompt[-PROMPT_CONTEXT_TOKENS:]
    context_text = tok.decode(context, skip_special_tokens=skip_special)
    hold = max((len(s) for s in stop), default=1) - 1
    ids, released, out = [], 0, []
    for chunk in chunks:
        ids += chunk
        full = tok.decode(context + ids, skip_special_tokens=skip_special)
        text = full[len(context_text):] if full.startswith(context_text) else \
            tok.decode(ids, skip_special_tokens=skip_special)
        text = text.rstrip("\ufffd")  # an incomplete last character
        hits = [(text.find(s), s) for s in stop if text.find(s) >= 0]
        if hits:
            pos, s = min(hits, key=lambda h: h[0])
            out.append(text[released:pos + len(s) if include_stop else pos])
            return out, True
        upto = max(released, len(text) - hold)
        out.append(text[released:upto])
        released = upto
    out.append(text[released:])
    return out, False


@pytest.fixture(scope="module", params=["demo", "byte-level-320"])
def tokenizer(request, tmp_path_factory):
    if request.param == "demo":
        return Tokenizer(demo_model_path())
    path = str(tmp_path_factory.mktemp("tok"))
    add_tokenizer(path, 320)
    return Tokenizer(path)


def test_matches_a_full_decode_at_every_step(tokenizer):
    rng = random.Random(0)
    texts = ["the quick brown fox jumps over the lazy dog. ", "héllo wörld — 日本語 🙂 ok\n"]
    for trial in range(300):
        if trial % 2:
            ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 50))]
        else:
            ids = tokenizer.encode(rng.choice(texts) * 3)[:rng.randrange(1, 60)]
        prompt = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(0, 8))]
        stop, include, skip = rng.choice(STOPS), rng.random() < 0.5, rng.random() < 0.8
        chunks, i = [], 0
        while i < len(ids):
            k = rng.randrange(1, 5)
            chunks.append(ids[i:i + k])
            i += k
        detok = IncrementalDetokenizer(tokenizer, prompt, stop, skip, include)
        got, stopped = [], False
        for chunk in chunks:
            text, stopped = detok.add(chunk)
            got.append(text)
            if stopped:
                break
        if not stopped:
            got.append(detok.flush())
        want, want_stopped = full_decode_reference(tokenizer, prompt, chunks, stop, include, skip)
        assert (got, stopped) == (want, want_stopped), f"trial {trial}: {ids} {stop}"
        assert stopped == (detok.stopped_by is not None)
