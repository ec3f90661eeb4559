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


def test_quality_cli_works_on_a_fresh_clone(tmp_path, monkeypatch, capsys):
    """No runs/demo/corpus: the shipped held-out prompts are used, and nothing shipped is rewritten."""
    import json
    import os

    from sparkserve.assets import demo_model_path
    from sparkserve.demo import build, quality  # noqa: F401  (build binds engine_generate at import: before the patch)

    shipped = quality.shipped_examples(demo_model_path())
    assert {ex.domain for ex in shipped} == {"math", "code", "chat"} and all(ex.prompt for ex in shipped)
    report = os.path.join(demo_model_path(), "demo_report.json")
    before = os.path.getmtime(report)
    monkeypatch.setattr(quality, "engine_generate",
                        lambda model, threads: lambda prompts, n: ["\\boxed{8}"] * len(prompts))
    assert quality.main(["--corpus", str(tmp_path / "no-corpus"), "--num-prompts", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["math_accuracy"]["prompts"] == 2 and os.path.getmtime(report) == before


def test_demo_build_and_drafters_never_replace_the_shipped_assets_by_default():
    from sparkserve.demo.__main__ import parser
    from sparkserve.demo.build import default_export_dir, export_target

    for action in ("build", "drafters"):
        assert export_target(parser().parse_args([action])) is None
        assert export_target(parser().parse_args([action, "--export", "/x"])) == "/x"
        assert export_target(parser().parse_args([action, "--ship"])) == default_export_dir()
