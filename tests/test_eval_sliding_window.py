"""Sliding-window models (Mistral; Qwen2 with sliding layers) through the evaluation: every request's log-likelihood
and greediness equal a separate forward pass of its own tokens (what lm-eval's HFLM runs), with rows several times
longer than the window, with and without a lent prefix, on the evaluation's own pass, transformers' decoder and the
whole forward, on the full network and on a sub-network with dropped layers (Qwen2's layer types reordered)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_eval_scored_pass import batches_of, documents

from nas import load_model
from nas.errors import NASError
from nas.evaluation import loglikelihood
from nas.evaluation.attention_windows import decoder_mask, layer_window
from nas.evaluation.batching import Batch
from nas.evaluation.requests import EncodedRequest
from nas.supernet.subnetwork import SubNetwork

WINDOW = 4
SUBS = {"full": None, "dropped layers, narrow MLPs": SubNetwork((0, 2, 3), (64, 128, 32), (2, 4, 2), 64)}


def separate_forward_passes(model, requests: list[EncodedRequest]) -> tuple[np.ndarray, np.ndarray]:
    """Each request's summed log-likelihood and greediness from a forward pass of its own tokens alone."""
    lls, greedy = [], []
    for request in requests:
        logits = model(input_ids=torch.tensor([request.inputs])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(request.inputs) - len(request.targets) :], dim=-1)
        targets = torch.tensor(request.targets)
        lls.append(logprobs[torch.arange(len(targets)), targets].sum().item())
        greedy.append(bool((logprobs.argmax(dim=-1) == targets).all()))
    return np.array(lls), np.array(greedy)


def assert_scores_equal_separate_passes(model, batches: list[Batch], requests: list[EncodedRequest]) -> None:
    """On the full network and on each sub-network of `SUBS`: `score_batches` gives every request the
    log-likelihood (atol 1e-4) and greediness of a forward pass of its own tokens."""
    for name, sub in SUBS.items():
        with torch.inference_mode(), model.sub_network(sub) if sub is not None else torch.no_grad():
            lls, greedy = loglikelihood.score_batches(model, batches, len(requests), progress=False)
            expected_lls, expected_greedy = separate_forward_passes(model, requests)
        np.testing.assert_allclose(lls, expected_lls, rtol=0, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(greedy, expected_greedy, err_msg=name)


@pytest.mark.parametrize("architecture", ["mistral", "qwen2"])
@pytest.mark.parametrize("path", ["scored pass", "transformers decoder", "whole forward"])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_scores_equal_separate_forward_passes(architecture, path, with_prefix, monkeypatch):
    model, _ = load_model("tiny_llama", architecture=architecture, sliding_window=WINDOW, seed=5)
    if path != "scored pass":
        monkeypatch.setattr(loglikelihood, "supports_scored_pass", lambda model: False)
    if path == "whole forward":
        monkeypatch.setattr(loglikelihood, "_separable_head", lambda model: False)
    docs = documents(seed=11, vocab=model.config.vocab_size, lengths=(1, 3))
    requests = [r for doc in docs for r in doc]
    batches = batches_of(docs, with_prefix)
    assert all(b.window_matters(WINDOW) for b in batches)  # every batch has rows several windows long
    windows = {layer_window(layer, model.config) for layer in model.model.layers}
    assert windows == ({WINDOW} if architecture == "mistral" else {None, WINDOW})
    assert_scores_equal_separate_passes(model, batches, requests)


def test_window_closes_keys_as_far_back_as_the_window():
    """Position by position: a query sees a key (prefix or row, its own branch or the shared part) only if it is
    fewer than `window` positions back; without a window, or with one no row reaches, the mask is the full one."""
    requests = [EncodedRequest(tuple(range(3, 12)), (12,)), EncodedRequest(tuple(range(3, 10)), (13, 14))]
    docs = [requests]
    batch = batches_of(docs * 3, with_prefix=False)[0]
    prefixed = Batch(
        batch.input_ids,
        batch.position_ids + 2,
        batch.branch,
        batch.score_target,
        batch.request_ids,
        batch.hidden_index,
        batch.score_hidden,
        torch.tensor([1, 2]),
    )
    for b in (batch, prefixed):
        full = b.attention_mask(torch.float32, gap=3)
        assert torch.equal(b.attention_mask(torch.float32, gap=3, window=64), full)
        windowed = b.attention_mask(torch.float32, gap=3, window=WINDOW)
        key_positions = torch.cat([torch.arange(b.prefix_length), torch.full((3,), -(10**6))])
        for row in range(b.input_ids.shape[0]):
            keys = torch.cat([key_positions, b.position_ids[row]])
            for query in range(b.input_ids.shape[1]):
                if b.branch[row, query] < 0:
                    continue
                near = b.position_ids[row, query] - keys < WINDOW
                expected_open = (full[row, 0, query] == 0) & near
                assert torch.equal(windowed[row, 0, query] == 0, expected_open)
    assert batch.window_matters(WINDOW) and not batch.window_matters(64) and not batch.window_matters(None)


def test_mixed_layer_types_get_a_mask_per_type():
    model, _ = load_model("tiny_llama", architecture="qwen2", sliding_window=WINDOW, seed=5)
    batch = batches_of(documents(seed=2, vocab=model.config.vocab_size), with_prefix=False)[0]
    masks = decoder_mask(model.config, batch, torch.float32)
    assert set(masks) == {"full_attention", "sliding_attention"}
    assert torch.equal(masks["full_attention"], batch.attention_mask(torch.float32))
    assert torch.equal(masks["sliding_attention"], batch.attention_mask(torch.float32, window=WINDOW))
    model.config.layer_types = [*model.config.layer_types[:-1], "chunked_attention"]
    with pytest.raises(NASError, match="chunked_attention"):
        decoder_mask(model.config, batch, torch.float32)
