"""``sparkserve`` command line: subcommand table, --help, flag parsing (in-process, no server)."""
import pytest

from sparkserve import cli
from sparkserve.server.launch import settings_from_args

FLAGS = ["--model", "--host", "--port", "--api-key", "--served-model-name", "--max-num-seqs",
         "--max-num-batched-tokens", "--max-model-len", "--block-size", "--num-kv-blocks", "--kv-cache-memory-gb",
         "--no-prefix-caching", "--dtype", "--seed", "--max-waiting", "--max-body-bytes", "--request-timeout",
         "--shutdown-timeout", "--max-n", "--max-logprobs", "--speculative-config", "--log-level"]


def test_top_level_help_lists_commands(capsys):
    assert cli.main([]) == 2
    assert "launch" in capsys.readouterr().out
    assert "launch" in cli.COMMANDS


def test_launch_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["launch", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    missing = [f for f in FLAGS if f not in out]
    assert not missing


@pytest.mark.parametrize("value, message", [("{bad", "invalid JSON"), ("[1]", "expected a JSON object"),
                                            ('{"method": "magic"}', "invalid speculative config"),
                                            ('{"no_such_field": 1}', "invalid speculative config")])
def test_bad_speculative_config_is_a_cli_error(capsys, value, message):
    with pytest.raises(SystemExit) as e:
        cli.main(["launch", "--speculative-config", value])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_become_settings_and_engine_kwargs():
    parser = cli.build_parser("launch")
    args = parser.parse_args(["launch", "--model", "m", "--no-prefix-caching", "--kv-cache-memory-gb", "0.25",
                              "--api-key", "a", "--api-key", "b", "--served-model-name", "x", "y",
                              "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3}'])
    s = settings_from_args(args)
    assert s.api_keys == ("a", "b") and s.model_names == ("x", "y")
    kw = s.engine_kwargs
    assert kw["enable_prefix_caching"] is False and kw["kv_cache_memory_bytes"] == 1 << 28
    assert kw["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3}
    assert kw["served_model_name"] == "x" and kw["model"] == "m"


def test_missing_model_dir_fails_fast(capsys):
    assert cli.main(["launch", "--model", "/no/such/model/dir"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_default_model_is_the_demo():
    s = settings_from_args(cli.build_parser("launch").parse_args(["launch"]))
    assert s.model is None and s.model_names == ("sparkserve-demo",) and s.port == 8000 and s.host == "127.0.0.1"
