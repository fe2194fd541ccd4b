"""Batched generation with a shared prefix on sliding-window models: the same text as each request alone.

A batch that reads its contexts' common prefix once puts each row's own tokens after left padding, between the
prefix and the row; transformers' sliding window counts those padding columns (it is measured in cache positions),
so a prefix key fewer than `window` positions back could fall out of a query's window. Such batches are read whole,
left-padded as HFLM does (padding before every real token, where it moves no distance)."""

from __future__ import annotations

import pytest

from nas import load_model
from nas.evaluation.generation import Generator, sliding_window_of

WINDOW = 16
PREFIX = "Solve each problem and give the answer. Q: two plus two. A: four. "  # 66 byte tokens, shared by all
SUFFIXES = ["Q: one and one?", "Q: ten minus three, then halved?", "Q: six?", "Q: nine times nine and more?"]
KWARGS = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}


def generate(model, tokenizer, share_prefix: bool, batch_size: int) -> list[str]:
    generator = Generator(
        tokenizer, max_length=512, max_batch_size=batch_size, share_prefix=share_prefix, min_shared_prefix=8
    )
    requests = generator.prepare([PREFIX + s for s in SUFFIXES], [KWARGS] * len(SUFFIXES))
    return generator.generate(model, requests, progress=False)


@pytest.mark.parametrize("architecture", ["mistral", "qwen2"])
def test_shared_prefix_batches_generate_what_each_request_alone_does(architecture):
    model, tokenizer = load_model("tiny_llama", architecture=architecture, sliding_window=WINDOW, seed=5)
    assert sliding_window_of(model) == WINDOW
    rows = [tokenizer(PREFIX + s)["input_ids"] for s in SUFFIXES]
    assert Generator(tokenizer, max_length=512, min_shared_prefix=8).shared_prefix(rows) > WINDOW
    alone = generate(model, tokenizer, share_prefix=False, batch_size=1)
    assert len(set(alone)) > 1  # the rows' answers differ: a mixed-up window would show
    assert generate(model, tokenizer, share_prefix=True, batch_size=len(SUFFIXES)) == alone
    assert generate(model, tokenizer, share_prefix=False, batch_size=len(SUFFIXES)) == alone


def test_a_window_beyond_every_batch_keeps_the_shared_prefix():
    model, tokenizer = load_model("tiny_llama", architecture="mistral", sliding_window=4096, seed=5)
    generator = Generator(tokenizer, max_length=512, min_shared_prefix=8)
    rows = [tokenizer(PREFIX + s)["input_ids"] for s in SUFFIXES]
    assert generator.prefix_to_share(rows, max_gen_toks=6, window=sliding_window_of(model)) > WINDOW
    assert generator.prefix_to_share(rows, max_gen_toks=6, window=WINDOW) == 0
    assert sliding_window_of(load_model("tiny_llama")[0]) is None
