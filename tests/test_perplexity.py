"""Perplexity of the active sub-network: definition, token count, caching, settings (tiny_llama, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from nas import SearchSpace, SubNetwork
from nas.errors import DataNotFoundError
from nas.evaluation.perplexity import (
    PerplexityConfigError,
    PerplexityEvaluator,
    perplexity,
    predicted_tokens,
    split_windows,
    tokenize,
)

TEXT = (
    "Robert Boulter is an English film, television and theatre actor. He had a guest starring role on the "
    "television series The Bill in 2000. This was followed by a starring role in the play Herons. "
) * 4


def hf_loss_perplexity(model, tokens: torch.Tensor, seq_len: int) -> tuple[float, int]:
    """Reference: Hugging Face's own `labels=` loss per window, weighted by the tokens it predicts."""
    total, count = 0.0, 0
    with torch.no_grad():
        for window in torch.split(tokens, seq_len):
            if window.numel() < 2:
                continue
            ids = window.unsqueeze(0)
            loss = model(input_ids=ids, labels=ids).loss.item()
            total += loss * (window.numel() - 1)
            count += window.numel() - 1
    return math.exp(total / count), count


def test_sub_network_perplexity_equals_manual_computation(tiny):
    model, tokenizer = tiny
    tokens = tokenize(tokenizer, TEXT)
    sub = SubNetwork(layers=(0, 2, 3), mlp_sizes=(64, 128, 32), num_heads=(2, 4, 2), hidden_size=64)
    with model.sub_network(sub):
        result = perplexity(model, tokens, seq_len=96, batch_size=3, progress=False)
        expected, count = hf_loss_perplexity(model, tokens, seq_len=96)
    assert result.tokens == count == predicted_tokens(tokens.numel(), 96)
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.nll), rel=1e-12)
    # The sub-network really ran: the full model scores the same text differently.
    full = perplexity(model, tokens, seq_len=96, batch_size=3, progress=False)
    assert model.active_sub_network is None
    assert abs(full.perplexity - result.perplexity) > 1e-3 * full.perplexity


def test_first_token_of_each_window_is_not_predicted(tiny):
    model, _ = tiny
    tokens = torch.randint(0, 256, (100,))
    result = perplexity(model, tokens, seq_len=32, batch_size=2, progress=False)
    assert result.tokens == 31 * 3 + 3  # windows of 32, 32, 32 and 4 tokens
    # A last window of a single token predicts nothing and is dropped.
    assert perplexity(model, tokens[:97], seq_len=32, progress=False).tokens == 31 * 3
    assert [w.numel() for w in split_windows(tokens[:97], 32)] == [32, 32, 32]


def test_max_tokens_and_batch_size(tiny):
    model, tokenizer = tiny
    tokens = tokenize(tokenizer, TEXT)
    capped = perplexity(model, tokens, seq_len=50, batch_size=1, max_tokens=230, progress=False)
    assert capped.tokens == 230 - 5
    # Same windows in bigger batches: same numbers up to float rounding.
    batched = perplexity(model, tokens, seq_len=50, batch_size=4, max_tokens=230, progress=False)
    assert batched.perplexity == pytest.approx(capped.perplexity, rel=1e-5)
    expected, _ = hf_loss_perplexity(model, tokens[:230], seq_len=50)
    assert capped.perplexity == pytest.approx(expected, rel=1e-5)


class CountingTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)


def test_tokenize_once_per_tokenizer_and_text(tiny):
    _, tokenizer = tiny
    counting = CountingTokenizer(tokenizer)
    first = tokenize(counting, TEXT)
    assert tokenize(counting, TEXT) is first
    assert counting.calls == 1
    assert tokenize(counting, TEXT + "!").numel() == first.numel() + 1
    assert counting.calls == 2
    assert first.tolist() == tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def test_evaluator_on_a_text_file_scores_the_active_sub_network(tiny, tmp_path):
    model, tokenizer = tiny
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    evaluator = PerplexityEvaluator(text_file=str(text_file), seq_len=64, max_tokens=256, progress=False)
    space = SearchSpace.from_config({"name": "t", "num_layers": {"choices": [0.5, 1.0]}}, model.config)
    with model.sub_network(space.smallest()):
        small = evaluator(model, tokenizer)
    full = evaluator(model, tokenizer)
    assert small.tokens == full.tokens == 256 - 4
    assert small.perplexity != pytest.approx(full.perplexity, rel=1e-3)
    tokens = tokenize(tokenizer, TEXT)
    assert full == perplexity(model, tokens, seq_len=64, max_tokens=256, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seq_len": 1}, "perplexity.seq_len=1"),
        ({"batch_size": 0}, "perplexity.batch_size=0"),
        ({"max_tokens": 1}, "perplexity.max_tokens=1"),
    ],
)
def test_bad_settings_name_the_override(kwargs, message, tmp_path):
    text_file = tmp_path / "t.txt"
    text_file.write_text(TEXT)
    with pytest.raises(PerplexityConfigError, match=message.replace(".", r"\.")):
        PerplexityEvaluator(text_file=str(text_file), **kwargs)


def test_missing_text_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataNotFoundError, match="perplexity.text_file"):
        PerplexityEvaluator(text_file=str(missing))
    with pytest.raises(DataNotFoundError, match="does not exist"):
        PerplexityEvaluator(data_dir=str(missing))


def test_wikitext2_from_the_data_folder(tiny):
    model, tokenizer = tiny
    evaluator = PerplexityEvaluator(seq_len=128, max_tokens=512, progress=False)
    assert evaluator.path.name == "wiki.test.raw"
    result = evaluator(model, tokenizer)
    assert result.tokens == 512 - 4
    assert 1.0 < result.perplexity < 10 * len(tokenizer)
