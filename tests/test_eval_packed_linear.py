"""Packed linear layers (`packed_linear`) compute what the modules do, for plain and elastic linears at any row count,
and the scored pass run layer by layer over a chunk of batches gives each batch's hidden states as run alone, whatever
the chunk's size, with prefixes and tails lent."""

from __future__ import annotations

import pytest
import torch
from test_eval_scored_pass import batches_of, documents
from test_eval_tails import batches_of as tail_batches_of
from test_eval_tails import planned, subject_documents

from nas import load_model
from nas.evaluation import loglikelihood
from nas.evaluation.packed_linear import PackedLinears, mkl_packing_available, packing_applies
from nas.evaluation.scored_pass import chunk_bytes, scored_hidden_chunk, scored_hidden_states
from nas.supernet.elastic_modules import ElasticLinear
from nas.supernet.subnetwork import SubNetwork

needs_mkl = pytest.mark.skipif(not mkl_packing_available(), reason="this torch build has no MKL packed GEMM")


def scaled(module: torch.nn.Linear) -> torch.nn.Linear:
    with torch.no_grad():
        module.weight.normal_(std=module.in_features**-0.5)
    return module


@needs_mkl
@pytest.mark.parametrize("rows", [1, 3, 17, 256, 301])
def test_packed_linears_compute_what_the_modules_do(rows):
    torch.manual_seed(rows)
    plain = scaled(torch.nn.Linear(96, 80, bias=True))
    elastic = scaled(ElasticLinear(160, 120, bias=False))
    elastic.active_out_features = 72
    linears = PackedLinears(True)
    with torch.inference_mode():
        # The elastic input narrows and widens (a sub-network's MLP width).
        for module, width, out_features in ((plain, 96, 80), (elastic, 112, 72), (elastic, 160, 72)):
            x = torch.randn(rows, 3, width)
            out = linears(module, x)
            assert out.shape == (rows, 3, out_features)
            torch.testing.assert_close(out, module(x), rtol=1e-5, atol=1e-6)
            assert linears._packed[module] is not None and linears._packed[module].in_features == width


@needs_mkl
def test_modules_it_cannot_pack_are_called_as_they_are():
    calls: list[str] = []

    class Adapter(torch.nn.Linear):  # a subclass may compute something else (LoRA, bitsandbytes)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append("adapter")
            return super().forward(x) + 1

    hooked = torch.nn.Linear(8, 8)
    hooked.register_forward_hook(lambda *args: calls.append("hook"))
    linears, x = PackedLinears(True), torch.randn(4, 8)
    with torch.inference_mode():
        adapter = Adapter(8, 8)
        torch.testing.assert_close(linears(adapter, x), adapter(x))
        linears(hooked, x)
        assert not packing_applies(torch.zeros(1, dtype=torch.bfloat16)) and packing_applies(torch.zeros(1))
        with torch.enable_grad():
            assert not packing_applies(torch.zeros(1))  # the packed product has no backward
        disabled, plain = PackedLinears(False), torch.nn.Linear(8, 8)
        assert torch.equal(disabled(plain, x), plain(x)) and not disabled._packed
    assert calls == ["adapter", "adapter", "hook"]
    assert linears._packed == {adapter: None, hooked: None}


def test_a_chunk_gives_each_batchs_hidden_states_as_alone():
    """Layer by layer over several batches (prefix lent) equals batch by batch, bit for bit."""
    model, _ = load_model("tiny_llama", seed=8)
    batches = batches_of(documents(seed=5, vocab=model.config.vocab_size), with_prefix=True)
    assert len(batches) > 2
    sub = SubNetwork((0, 2, 3), (64, 128, 32), (2, 4, 2), 64)
    with torch.inference_mode(), model.sub_network(sub):
        kv = loglikelihood._prefix_kv(model, batches[0].prefix)
        alone = [scored_hidden_states(model, batch, kv) for batch in batches]
        together = scored_hidden_chunk(model, [(batch, kv) for batch in batches])
    assert len(together) == len(alone)
    for a, b in zip(alone, together):
        assert torch.equal(a, b)


@pytest.mark.parametrize("per_chunk", ["one batch", "two or more", "all"])
def test_scores_do_not_depend_on_the_chunk_size(per_chunk, monkeypatch):
    """With subject tails lent per layer: a batch per chunk, a few, all in one: the same scores."""
    model, _ = load_model("tiny_llama", seed=9)
    subjects = subject_documents(5, model.config.vocab_size, per_subject=3)
    requests = sum(len(doc) for docs in subjects for doc in docs)
    batches = tail_batches_of(planned(subjects))
    assert batches[0].tails is not None and len(batches) > 4
    reference = loglikelihood.score_batches(model, batches, requests, progress=False)
    largest = max(chunk_bytes(b, model.config, 4) for b in batches)
    limit = {"one batch": 1, "two or more": 2 * largest, "all": 2**40}[per_chunk]
    chunks: list[int] = []
    run = loglikelihood.scored_hidden_chunk
    monkeypatch.setattr(loglikelihood, "CHUNK_BYTES", limit)
    monkeypatch.setattr(
        loglikelihood, "scored_hidden_chunk", lambda m, chunk: chunks.append(len(chunk)) or run(m, chunk)
    )
    lls, greedy = loglikelihood.score_batches(model, batches, requests, progress=False)
    assert sum(chunks) == len(batches)
    if per_chunk == "one batch":
        assert chunks == [1] * len(batches)
    elif per_chunk == "all":
        assert chunks == [len(batches)]
    else:
        assert len(chunks) > 1 and all(n >= 2 for n in chunks[:-1])
    assert (lls == reference[0]).all() and (greedy == reference[1]).all()
