"""Token-level stop conditions: eos, stop tokens, min_tokens, max_tokens, context length."""
from sched_helpers import FakeRunner, check_drained, drain, make_request, make_scheduler


def finish(**kwargs):
    sched = make_scheduler(max_model_len=kwargs.pop("max_model_len", 64))
    sched.add_request(make_request("a", 5, **kwargs))
    (request,) = drain(sched, FakeRunner(sched))  # samples token 7 every step
    check_drained(sched)
    return request


def test_eos():
    request = finish(eos=(7,), max_tokens=10)
    assert request.output_token_ids == [7] and request.finish_reason == "stop" and request.stop_reason is None


def test_ignore_eos():
    request = finish(eos=(7,), max_tokens=4, ignore_eos=True)
    assert len(request.output_token_ids) == 4 and request.finish_reason == "length"


def test_stop_token_ids():
    request = finish(stop_token_ids=[7], max_tokens=10, ignore_eos=True)
    assert request.output_token_ids == [7] and request.finish_reason == "stop" and request.stop_reason == 7


def test_min_tokens_puts_that_many_tokens_before_the_stop():
    request = finish(eos=(7,), max_tokens=10, min_tokens=3)
    assert request.output_token_ids == [7] * 4 and request.finish_reason == "stop"
    request = finish(stop_token_ids=[7], max_tokens=3, min_tokens=3)
    assert len(request.output_token_ids) == 3 and request.finish_reason == "length"


def test_max_tokens():
    request = finish(max_tokens=5)
    assert len(request.output_token_ids) == 5 and request.finish_reason == "length"
    assert request.stop_reason is None


def test_stop_on_last_allowed_token_reports_stop():
    request = finish(eos=(7,), max_tokens=1)
    assert request.finish_reason == "stop"


def test_context_length():
    request = finish(max_tokens=None, max_model_len=8)
    assert request.num_tokens == 8 and request.finish_reason == "length"
