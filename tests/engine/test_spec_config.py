"""SpecConfig from user JSON: typed fields, one builder (``SpecConfig.from_dict``), clear errors."""
import argparse

import pytest

from sparkserve.cli_args import speculative_config_arg
from sparkserve.config import SpecConfig
from sparkserve.engine.args import build_engine_config

PLANNER = {"verify": "lagged", "verify_k": 3, "verify_lag": 4, "cost_profile_time_s": 2.5,
           "cost_cache_dir": "/tmp/costs", "drift_ece_bound": 0.05, "draft_gate": False}


def test_flat_keys_become_typed_fields():
    spec = SpecConfig.from_dict({"method": "dspark", "model": "d", **PLANNER})
    assert (spec.verify, spec.verify_k, spec.verify_lag, spec.cost_profile_time_s, spec.cost_cache_dir,
            spec.drift_ece_bound, spec.draft_gate) == ("lagged", 3, 4, 2.5, "/tmp/costs", 0.05, False)
    defaults = SpecConfig.from_dict({})
    assert (defaults.verify_k, defaults.verify_lag, defaults.draft_gate, defaults.cost_profile_time_s) == \
        (None, 2, True, 30.0)
    ngram = SpecConfig.from_dict({"method": "ngram", "max_ngram": 5, "min_ngram": 3})
    assert (ngram.max_ngram, ngram.min_ngram) == (5, 3)


def test_legacy_extra_is_flattened():
    legacy = {"method": "dspark", "model": "d", "verify": "lagged",
              "extra": {k: v for k, v in PLANNER.items() if k != "verify"}}
    assert SpecConfig.from_dict(legacy) == SpecConfig.from_dict({"method": "dspark", "model": "d", **PLANNER})
    assert SpecConfig.from_dict({"method": "ngram", "extra": {"max_ngram": 6}}).max_ngram == 6
    with pytest.raises(ValueError, match=r"\['verify_k'\] given both flat and inside"):
        SpecConfig.from_dict({"verify_k": 1, "extra": {"verify_k": 2}})


def test_unknown_key_lists_the_valid_ones():
    for bad in ({"verify_kk": 1}, {"extra": {"verify_kk": 1}}):
        with pytest.raises(ValueError) as e:
            SpecConfig.from_dict(bad)
        message = str(e.value)
        assert "unknown speculative config key(s) ['verify_kk']" in message
        assert all(f"'{name}'" in message for name in ("method", "verify_k", "draft_gate", "max_ngram"))


@pytest.mark.parametrize("bad, match", [
    ({"method": "dspark", "max_ngram": 3}, "apply to method 'ngram' only"),
    ({"verify_k": "2"}, "verify_k must be int or None"),
    ({"verify_k": 1.5}, "verify_k must be int or None"),
    ({"draft_gate": 1}, "draft_gate must be bool"),
    ({"verify_lag": True}, "verify_lag must be int"),
    ({"verify_lag": 0}, "verify_lag must be >= 1"),
    ({"verify_k": -1}, "verify_k must be >= 0"),
    ({"cost_profile_time_s": 0}, "cost_profile_time_s must be positive"),
    ({"drift_ece_bound": 2.0}, "drift_ece_bound must be in"),
    ({"method": "ngram", "min_ngram": 5}, "min_ngram"),
    ({"extra": [1]}, '"extra" must be an object'),
])
def test_bad_values_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        SpecConfig.from_dict(bad)


def test_every_entry_point_builds_through_from_dict():
    cfg = build_engine_config("m", max_model_len=64, speculative_config={"method": "ngram", "extra": {"min_ngram": 1}})
    assert cfg.spec.min_ngram == 1 and cfg.spec.method == "ngram"
    spec = SpecConfig(method="ngram")
    assert build_engine_config("m", max_model_len=64, speculative_config=spec).spec is spec
    with pytest.raises(ValueError, match="valid keys"):
        build_engine_config("m", max_model_len=64, speculative_config={"no_such": 1})
    assert speculative_config_arg('{"method": "ngram", "verify_k": 2}') == {"method": "ngram", "verify_k": 2}
    with pytest.raises(argparse.ArgumentTypeError, match="valid keys"):
        speculative_config_arg('{"no_such": 1}')
