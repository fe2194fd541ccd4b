"""Prefill/decode throughput of the live sub-network: shapes, repeats, and decoding with dropped layers."""

from __future__ import annotations

import pytest

from nas.errors import NASError
from nas.evaluation.speed import ThroughputMeter
from nas.supernet.subnetwork import SubNetwork


def test_measures_prefill_and_decode_on_a_sub_network(tiny):
    model, _ = tiny
    sub = SubNetwork((1, 3), (64, 128), (2, 4), 48)  # dropped layers: the KV cache is indexed by position
    meter = ThroughputMeter(batch_size=2, prompt_len=8, new_tokens=3, warmup=1, repeats=3)
    with model.sub_network(sub):
        result = meter.measure(model)
        assert model.active_sub_network == sub
    assert len(result.prefill_s) == 3 and len(result.decode_s) == 3
    assert result.prefill_tokens_per_s == pytest.approx(16 / sorted(result.prefill_s)[1])
    assert result.decode_tokens_per_s == pytest.approx(6 / sorted(result.decode_s)[1])
    assert result.device == "cpu" and result.dtype == "float32" and result.threads >= 1


def test_decode_can_be_skipped(tiny):
    model, _ = tiny
    result = ThroughputMeter(batch_size=1, prompt_len=4, new_tokens=0, repeats=1).measure(model)
    assert result.decode_s == [] and result.decode_tokens_per_s == 0.0 and result.prefill_tokens_per_s > 0


def test_bad_settings():
    with pytest.raises(NASError, match="repeats"):
        ThroughputMeter(repeats=0)


@pytest.mark.parametrize("kind", ["uniform", "per-layer"])
def test_exported_model_is_timed_too(tiny, kind):
    from nas.export.speed import measure_exported

    model, _ = tiny
    sub = SubNetwork((0, 2), (64, 64), (4, 4), 64) if kind == "uniform" else SubNetwork((0, 3), (32, 128), (2, 4), 64)
    meter = ThroughputMeter(batch_size=1, prompt_len=8, new_tokens=2, warmup=0, repeats=1)
    result = measure_exported(meter, model, sub)
    assert result.prefill_tokens_per_s > 0 and result.decode_tokens_per_s > 0
    assert model.active_sub_network is None  # the live model is left as it was
