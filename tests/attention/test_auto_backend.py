"""``--attention-backend auto``: the choice is a pure function of the device and of what imports
(``registry.choose_auto``), so every CUDA case is tested here on a CPU with an injected ``importable``."""
from __future__ import annotations

import logging

import pytest

from sparkserve.attention import registry

FLASHINFER, TRITON = "flashinfer", "sparkserve_triton.paged_attention"


def _imports(*ok: str):
    return lambda module: module in ok


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("ok,expected", [((FLASHINFER, TRITON), "flashinfer"), ((TRITON,), "triton"),
                                         ((FLASHINFER,), "torch"), ((), "torch")])
def test_cuda_prefers_flashinfer_then_triton_then_torch(device, ok, expected):
    choice, why = registry.choose_auto(device, _imports(*ok), native_available=lambda: True)
    assert choice == expected and "CUDA" in why


@pytest.mark.parametrize("native,expected", [(True, "cpu"), (False, "torch")])
def test_cpu_is_unchanged_and_never_asks_what_imports(native, expected):
    def importable(module):
        raise AssertionError(f"a CPU device must not probe {module}")

    assert registry.choose_auto("cpu", importable, lambda: native)[0] == expected


def test_other_devices_get_torch():
    assert registry.choose_auto("mps", _imports(FLASHINFER, TRITON), lambda: True)[0] == "torch"


def test_resolve_logs_the_choice_and_the_override_wins(monkeypatch, caplog):
    monkeypatch.delenv("SPARKSERVE_ATTENTION_BACKEND", raising=False)
    monkeypatch.setattr(registry, "_announced", set())
    with caplog.at_level(logging.INFO, logger="sparkserve.attention"):
        assert registry.resolve("auto", "cuda", importable=_imports(TRITON)) == "triton"
    assert [r.getMessage() for r in caplog.records] == [
        "attention backend auto -> triton (CUDA device; flashinfer does not import, triton does)"]
    monkeypatch.setenv("SPARKSERVE_ATTENTION_BACKEND", "torch")
    assert registry.resolve("auto", "cuda", importable=_imports(FLASHINFER, TRITON)) == "torch"
    assert registry.resolve("flashinfer", "cuda", importable=_imports()) == "flashinfer"  # explicit names stay


def test_module_imports_answers_for_real_modules():
    assert registry.module_imports("json")
    assert not registry.module_imports("sparkserve_no_such_module")
