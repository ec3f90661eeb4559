"""The --quick recipe runs end to end: corpus -> tokenizer -> train -> export -> loads in transformers."""

import json

import pytest
import torch

from sparkserve.demo.__main__ import main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-quick")
    assets = out / "assets"
    assert main(["build", "--quick", "--out", str(out), "--export", str(assets), "--threads", "1"]) == 0
    return out


def test_quick_build_copies_the_export(built):
    from sparkserve.demo.export import EXPORT_FILES

    for name in EXPORT_FILES:
        assert (built / "assets" / name).read_bytes() == (built / "model" / name).read_bytes(), name


def test_quick_build_exports_a_transformers_model(built):
    transformers = pytest.importorskip("transformers")
    model_dir = built / "model"
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert cfg["torch_dtype"] == "bfloat16" and cfg["tie_word_embeddings"] is True
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_quick_build_matches_sparkserve_loader(built):
    from sparkserve.models.loader import load_model

    transformers = pytest.importorskip("transformers")
    ours, _ = load_model(str(built / "model"), dtype="float32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(built / "model"), dtype=torch.float32)
    x = torch.randint(0, 1024, (1, 17))
    with torch.no_grad():
        assert torch.allclose(ours.forward_train(x), theirs(x).logits, atol=1e-4)


def test_quick_build_writes_prompt_sets_and_report(built):
    model_dir = built / "model"
    for domain in ("math", "code", "chat"):
        lines = (model_dir / f"demo-{domain}.jsonl").read_text().splitlines()
        assert lines
        for line in lines:
            rec = json.loads(line)
            assert set(rec) == {"turns", "reference"} and len(rec["turns"]) == 1 and rec["reference"]
    report = json.loads((model_dir / "demo_report.json").read_text())
    assert report["steps"] == 30 and set(report["test_perplexity"]) == {"math", "code", "chat"}
    assert 0 <= report["math_accuracy"]["accuracy"] <= 1 and 0 <= report["code_parse"]["parse_rate"] <= 1
    assert set(report["samples"]) == {"math", "code", "chat"}  # three each (the quick test split is smaller)
    assert all(1 <= len(s) <= 3 and s[0]["answer"] for s in report["samples"].values())
    gen = json.loads((model_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == 2


def test_rerun_resumes_instead_of_retraining(built, capsys):
    assert main(["build", "--quick", "--out", str(built), "--no-export", "--threads", "1"]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_quick_drafter_pipeline(built):
    """data -> fit (each method, a few steps) -> calibrate -> eval -> export, on the quick demo target."""
    out, assets = built / "drafters", built / "assets"
    assert main(["drafters", "--quick", "--demo", str(built), "--out", str(out), "--export", str(assets),
                 "--threads", "1"]) == 0
    for m in ("dspark", "dflash", "eagle3"):
        log = [json.loads(line) for line in (out / m / "train_log.jsonl").read_text().splitlines()]
        assert log[-1]["loss"] < log[0]["loss"], m
        shipped = assets / "drafters" / m
        assert (shipped / "config.json").exists() and (shipped / "model.safetensors").exists()
    assert (assets / "drafters" / "dspark" / "calibration.json").exists()
    report = json.loads((out / "report" / "report.json").read_text())
    for m, rec in report["drafters"].items():
        for t, run in rec["runs"].items():
            assert all(tau >= 1.0 for tau in run["tau"].values()), (m, t, run["tau"])
    assert (out / "report" / "report.md").exists() and list((out / "report").glob("*.png"))
