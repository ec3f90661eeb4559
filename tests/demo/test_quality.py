"""The demo model's objective quality figures: answer extraction and scoring."""
from sparkserve.demo.corpus_types import Example
from sparkserve.demo.quality import code_parse_rate_of, evaluate_quality, extract_code, math_accuracy_of, parses


def test_extract_code_takes_the_first_python_fence_even_if_unclosed():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\ntrailing") == "def f():\n    return 1\n"
    assert extract_code("```python\nx = (1,\n") == "x = (1,\n"
    assert extract_code("y = 2") == "y = 2"


def test_parse_rate_counts_syntax_errors():
    texts = ["```python\ndef f():\n    return 1\n```", "```python\ndef f(:\n```", "```python\nclass A:\n"]
    assert parses("x = 1") and not parses("def (")
    assert code_parse_rate_of(texts) == {"prompts": 3, "parsed": 1, "parse_rate": 0.3333}


def test_math_accuracy_compares_the_boxed_answer():
    pool = [Example("math", "q", "r", "21", "t"), Example("math", "q", "r", "5", "t")]
    res = math_accuracy_of(["so \\boxed{21}.", "\\boxed{6}"], pool)
    assert res == {"prompts": 2, "correct": 1, "accuracy": 0.5}


def test_evaluate_quality_reports_three_samples_per_domain():
    test = [Example(d, f"{d} {i}", "r", "1", "t") for d in ("math", "code", "chat") for i in range(5)]
    calls = []

    def generate(prompts, max_tokens):
        calls.append((len(prompts), max_tokens))
        return ["\\boxed{1} ```python\nx = 1\n```"] * len(prompts)

    q = evaluate_quality(generate, test, n=4)
    assert q["math_accuracy"]["accuracy"] == 1.0 and q["code_parse"]["parse_rate"] == 1.0
    assert {d: len(s) for d, s in q["samples"].items()} == {"math": 3, "code": 3, "chat": 3}
    assert q["samples"]["chat"][0]["prompt"] == "chat 0"
    assert calls == [(4, 200), (4, 512), (3, 160)]
