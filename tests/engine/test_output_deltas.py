"""The engine's outputs are per-step deltas, and producing them costs work in proportion to the new
tokens, not to the output so far: counted (tokens read from the request, tokens decoded, bytes put
on the wire) on every step of a long generation, so the check is exact, not a timing."""
import pytest

from sparkserve.assets import demo_model_path
from sparkserve.engine.detokenizer import PROMPT_CONTEXT_TOKENS
from sparkserve.engine.llm import OutputAccumulator
from sparkserve.engine.output_processor import OutputProcessor, ParentRequest
from sparkserve.engine.wire import RequestDelta, encode_frame
from sparkserve.models.tokenizer import Tokenizer
from sparkserve.request import Request, RequestStatus
from sparkserve.sampling_params import SamplingParams

TEXT = ("The quick brown fox jumps over the lazy dog, and the dog sleeps on in the afternoon sun while "
        "the fox runs off across the field. ")
NUM_TOKENS = 1200
DELTA_BYTES = 48  # a delta's fixed part: frame header, request id, counters, finish reason
DELTA_BYTES_PER_TOKEN = 48  # one token id, its logprob and two top logprobs (its text counted apart)


class CountingTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer, self.num_decoded = tokenizer, 0

    def decode(self, ids, skip_special_tokens=True):
        self.num_decoded += len(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


class CountingList(list):
    """The request's output token list, counting the elements the processor slices out of it."""

    num_read = 0

    def __getitem__(self, index):
        out = super().__getitem__(index)
        if isinstance(index, slice):
            self.num_read += len(out)
        return out


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(demo_model_path())


@pytest.mark.parametrize("tokens_per_step", [1, 4])  # plain decoding; speculation emitting several per step
def test_per_step_output_work_is_proportional_to_the_new_tokens(tokenizer, tokens_per_step):
    counting = CountingTokenizer(tokenizer)
    prompt = tokenizer.encode("Once upon a time")
    output = tokenizer.encode(TEXT * 60)[:NUM_TOKENS]
    params = SamplingParams(max_tokens=NUM_TOKENS, logprobs=2, stop=["a stop string that never occurs"])
    req = Request("r", prompt, params)
    req.output_token_ids = CountingList()
    proc = OutputProcessor(counting)
    proc.add(ParentRequest("r", None, prompt), "r", 0, req)
    read, decoded, wire_bytes, text = [], [], [], []
    for start in range(0, NUM_TOKENS, tokens_per_step):
        new = output[start:start + tokens_per_step]
        req.output_token_ids.extend(new)
        if start + tokens_per_step >= NUM_TOKENS:
            req.status = RequestStatus.FINISHED_LENGTH
        req.output_token_ids.num_read = counting.num_decoded = 0
        logprobs = {"r": [(-0.5, [(t, -0.5), (t + 1, -1.5)]) for t in new]}
        deltas, stopped = proc.process([req], logprobs)
        (delta,) = deltas
        (seq,) = delta.seqs
        assert not stopped and delta.finished == (req.status is RequestStatus.FINISHED_LENGTH)
        assert seq.new_token_ids == new and [lp[0] for lp in seq.new_logprobs] == new  # only the new tokens
        assert seq.num_output_tokens == start + len(new)
        read.append(req.output_token_ids.num_read)
        decoded.append(counting.num_decoded)
        wire_bytes.append(len(encode_frame(delta)) - len(seq.new_text.encode()))
        text.append(seq.new_text)
    assert read == [tokens_per_step] * len(read)  # the processor reads each new token once, nothing else
    # the detokenizer decodes a window of the last steps' tokens, never the output so far
    assert max(decoded) <= 3 * tokens_per_step + PROMPT_CONTEXT_TOKENS
    assert max(wire_bytes) <= DELTA_BYTES + DELTA_BYTES_PER_TOKEN * tokens_per_step
    context = prompt[-PROMPT_CONTEXT_TOKENS:]
    assert "".join(text) == tokenizer.decode(context + output)[len(tokenizer.decode(context)):]
    assert not proc.parents and not proc.child_to_parent  # a finished request leaves nothing behind


def test_engine_steps_emit_deltas_that_fold_into_the_final_output(qwen3_dir):
    from sparkserve import LLM

    llm = LLM(qwen3_dir, max_model_len=128)
    eng = llm.engine
    eng.add_request("a", {"prompt_token_ids": [5, 6, 7]}, SamplingParams(temperature=0, max_tokens=30,
                                                                          ignore_eos=True, logprobs=1))
    eng.add_request("b", {"prompt_token_ids": [9, 10]}, SamplingParams(temperature=0.8, seed=3, max_tokens=20,
                                                                       ignore_eos=True, n=2))
    acc, done, seen = OutputAccumulator(), {}, {"a": [], "b#0": [], "b#1": []}
    while eng.has_unfinished():
        deltas = eng.step()
        assert all(isinstance(d, RequestDelta) for d in deltas)
        for d in deltas:
            for s in d.seqs:
                key = d.request_id if d.request_id == "a" else f"b#{s.index}"
                assert len(s.new_token_ids) <= 1  # no speculation: one new token per sequence and step
                seen[key] += s.new_token_ids
                assert s.num_output_tokens == len(seen[key])
        done.update({o.request_id: o for o in acc.update(deltas)})
    a, b = done["a"], done["b"]
    assert a.outputs[0].token_ids == seen["a"] and len(seen["a"]) == 30 and a.outputs[0].finish_reason == "length"
    assert [lp.token_id for lp in a.outputs[0].logprobs] == seen["a"]
    assert [o.token_ids for o in b.outputs] == [seen["b#0"], seen["b#1"]] and len(b.outputs[0].token_ids) == 20
    full = llm.tokenizer.decode([5, 6, 7] + seen["a"])[len(llm.tokenizer.decode([5, 6, 7])):]
    assert a.outputs[0].text == full.rstrip("\ufffd")  # an incomplete last character is never released
