"""`sparkserve profile` measures t(B), prints it and caches it where the engine finds it."""
import json

from sparkserve import cli
from tests.models.hf_fixtures import make_hf_model


def test_profile_saves_a_table_the_engine_reuses(tmp_path, capsys, monkeypatch):
    model = make_hf_model(str(tmp_path / "target"), "qwen3", tied=True, seed=1)
    cache, out = tmp_path / "cache", tmp_path / "table.json"
    common = ["--model", model, "--max-num-batched-tokens", "24", "--cache-dir", str(cache), "--num-threads", "1",
              "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3}']
    assert cli.main(["profile", *common, "--time-limit", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "steps/s" in text and "saved" in text
    table = json.loads(out.read_text())
    assert table["buckets"][0] == 1 and table["buckets"][-1] == 24 and table["key"]["drafter"] == "ngram"
    assert all(t > 0 for t in table["step_times_s"])
    assert len(list((cache / "cost").glob("cost-*.json"))) == 1

    from sparkserve.engine.args import build_engine_config
    from sparkserve.engine.engine import Engine

    def no_engine(*args, **kwargs):
        raise AssertionError("--show must not build an engine")

    with monkeypatch.context() as m:
        m.setattr(Engine, "__init__", no_engine)
        assert cli.main(["profile", *common, "--show"]) == 0  # reads the cache, measures nothing, loads nothing
    shown = capsys.readouterr().out
    assert "   24 " in shown and '"drafter": "ngram"' in shown

    spec = {"method": "ngram", "num_speculative_tokens": 3, "verify": "causal",
            "cost_cache_dir": str(cache), "cost_profile_time_s": 1000.0}  # forever, if it profiled
    engine = Engine(build_engine_config(model, max_num_batched_tokens=24, num_threads=1, speculative_config=spec))
    assert engine.spec_control.cost_table.buckets == table["buckets"]


def test_show_without_a_table_says_so(tmp_path, capsys):
    model = make_hf_model(str(tmp_path / "target"), "qwen3", tied=True, seed=1)
    assert cli.main(["profile", "--model", model, "--cache-dir", str(tmp_path), "--show"]) == 1
    assert "no cached table" in capsys.readouterr().out
