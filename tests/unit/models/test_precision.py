"""Precision is chosen from the hardware (flags, then a measured probe, cached), never assumed."""

import json

import pytest
import torch

from mechunlearn.models import precision
from mechunlearn.unlearn.loop import TrainConfig, fit
from tests.conftest import dtype_recording_loss


@pytest.fixture
def probe_calls(monkeypatch, tmp_path):
    """Count probe runs; each returns the next speed-up from ``probe_calls.speedups``."""
    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))
    monkeypatch.delenv(precision.ENV_OVERRIDE, raising=False)
    class Calls(list):
        speedups: list

    calls = Calls()

    def fake(**kwargs):
        speedup = calls.speedups[len(calls)]
        calls.append(speedup)
        return {"float32_s": speedup * 0.01, "bfloat16_s": 0.01, "speedup": speedup}

    calls.speedups = [2.4, 0.4]
    monkeypatch.setattr(precision, "measure_cpu_speedup", fake)
    return calls


def test_cpu_without_bf16_flags_gets_float32_without_a_probe(monkeypatch, probe_calls):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw"}))
    chosen = precision.resolve("auto", "cpu")
    assert chosen.autocast == "float32" and "emulated" in chosen.reason
    assert probe_calls == []


def test_cpu_with_bf16_flags_is_measured_once_and_cached(monkeypatch, probe_calls, tmp_path):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    first = precision.resolve("auto", "cpu")
    second = precision.resolve("auto", torch.device("cpu"))
    assert first.autocast == second.autocast == "bfloat16"
    assert probe_calls == [2.4]  # the second resolution read the cache
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert [v["choice"] for v in cached.values()] == ["bfloat16"]
    assert "2.40x" in first.reason


def test_a_probe_that_measures_bf16_slower_picks_float32(monkeypatch, probe_calls):
    probe_calls.speedups = [0.4]
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert precision.resolve("auto", "cpu").autocast == "float32"


def test_explicit_settings_and_the_override(monkeypatch, probe_calls):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    assert precision.resolve("bfloat16", "cpu").autocast == "bfloat16"  # honoured even where slow
    assert precision.resolve(None, "cpu").autocast == "float32"
    with precision.forced("bfloat16"):
        forced = precision.resolve("auto", "cpu")
    assert forced.autocast == "bfloat16" and precision.ENV_OVERRIDE in forced.reason
    monkeypatch.setenv(precision.ENV_OVERRIDE, "fp16")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        precision.resolve("auto", "cpu")
    with pytest.raises(ValueError, match="autocast must be one of"):
        TrainConfig(autocast="float16")
    assert probe_calls == []


def test_the_loop_records_what_auto_resolved_to(monkeypatch, probe_calls, tiny_model):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    m = tiny_model
    loss, seen = dtype_recording_loss(m)
    log = fit(m, loss, TrainConfig(steps=1, lr=1e-3), weights=["blocks.0.mlp.W_in"])
    assert log.precision.requested == "auto" and log.precision.autocast == "float32"
    assert seen == [torch.float32]


def test_the_real_probe_measures_both_precisions():
    measured = precision.measure_cpu_speedup(repeats=1, tokens=64, d_model=16, d_mlp=32)
    assert measured["float32_s"] > 0 and measured["bfloat16_s"] > 0
    assert measured["speedup"] == pytest.approx(measured["float32_s"] / measured["bfloat16_s"])
