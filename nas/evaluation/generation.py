"""`generate_until` requests answered by batched greedy generation on the live (sub-)network, as HFLM answers them.

What HFLM 0.4.13 does, kept: contexts encoded with its batch-encoding rule and cut from the left to leave room
for `max_gen_toks`, left padding, `model.generate(do_sample=False, use_cache=True)` with the KV cache, the
model's EOS text added to the stop strings, the continuation decoded without special tokens and cut at the
first stop string (lm-eval's own `normalize_gen_kwargs`, `handle_stop_sequences`, `postprocess_generated_text`).
What differs is how the work is shared out. Requests are batched longest first under a budget of padded
tokens, and a batch stops as soon as every row has produced a stop string. The token prefix all contexts of a
batch share (fixed few-shot exemplars: `gsm8k_cot`'s eight solved problems, about 90% of each context) is read
once: its KV cache is computed for one row and lent to every row, whose own tokens follow after left padding
(masked; position ids continue after the prefix, as `generate` derives them from the attention mask). On a CPU
reading the contexts is most of the time of a few-shot generative task. Tasks that draw their examples at
random per question (`gsm8k`'s five) share nothing and run as HFLM runs them. The logits are those of the
whole context up to float rounding (the prefix's keys and values come from a forward pass of its own), so a
greedy choice between two near-equal tokens can differ from an unshared run; `share_prefix=False` reads every
context whole. On a sliding-window model, a batch whose rows and generated tokens outgrow the window is read whole
too (`Generator.prefix_to_share`: the padding after the prefix would count in transformers' window).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from tqdm.auto import tqdm

from nas.errors import NASError
from nas.evaluation.attention_windows import layer_window

log = logging.getLogger(__name__)

# `generate`'s name for a cache to continue from: `cache` in recent transformers 5, `past_key_values` before.
_CACHE_KWARG = (
    "cache" if "cache" in getattr(transformers.generation.utils, "ALL_CACHE_NAMES", ()) else "past_key_values"
)
# HFLM's default cap on generated tokens when a task's generation_kwargs name none.
DEFAULT_MAX_GEN_TOKS = 256


@dataclass(frozen=True)
class GenerationRequest:
    """One `generate_until` request: its context, lm-eval's generation kwargs, and the context's tokens."""

    context: str
    kwargs: dict[str, Any]
    num_tokens: int


class _AllStopped(transformers.StoppingCriteria):
    """True once every row's generated text contains one of the stop strings (then each is cut there)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], start: int, rows: int) -> None:
        self.tokenizer, self.stops, self.start = tokenizer, [s for s in stops if s], start
        self.done = [False] * rows
        lookback = max((len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stops), default=0)
        self.lookback = lookback + 2  # a stop string may be tokenised differently inside the generated text

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> bool:
        tails = input_ids[:, self.start :][:, -self.lookback :]
        for row, tail in enumerate(self.tokenizer.batch_decode(tails)):
            if not self.done[row]:
                self.done[row] = any(stop in tail for stop in self.stops)
        return all(self.done)


def sliding_window_of(model: Any) -> int | None:
    """The narrowest sliding attention window among the layers that run (Mistral's, Qwen2's sliding layers), in
    tokens; None where every layer attends to all earlier tokens."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "layers"):
        return None
    config = decoder.config
    layers = decoder.layers[: getattr(config, "num_hidden_layers", len(decoder.layers))]  # an elastic list: those run
    windows = [layer_window(layer, config) for layer in layers]
    return min((w for w in windows if w is not None), default=None)


def _kwargs_key(kwargs: dict[str, Any]) -> str:
    return repr(sorted(kwargs.items(), key=lambda kv: kv[0]))


class Generator:
    """Answers `generate_until` requests on whatever sub-network of `model` is active.

    Args:
        tokenizer: the model's tokenizer (left padding is set on a copy of its settings per batch).
        max_length: the model's maximum input length (HFLM's `max_length`).
        batch_tokens: padded context tokens per batch (rows x longest context).
        max_batch_size: rows per batch at most.
        max_gen_toks: generated tokens at most, where a task does not say (HFLM's default, 256).
        share_prefix: read the token prefix common to a batch's contexts once (see the module docstring).
        min_shared_prefix: the shortest common prefix worth a forward pass of its own.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        batch_tokens: int = 16384,
        max_batch_size: int = 16,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        share_prefix: bool = True,
        min_shared_prefix: int = 32,
    ) -> None:
        self.tokenizer = tokenizer
        self.share_prefix = share_prefix
        self.min_shared_prefix = min_shared_prefix
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_gen_toks = max_gen_toks
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eot = tokenizer.eos_token_id
        self.eos_text = tokenizer.decode(eot, skip_special_tokens=False) if eot is not None else None

    def _special_tokens(self, first: str) -> dict[str, bool]:
        # HFLM.tok_batch_encode: no special tokens for a batch whose first string already starts with the BOS text.
        bos = getattr(self.tokenizer, "bos_token", None)
        return {"add_special_tokens": False} if bos and first.startswith(bos) else {}

    def prepare(self, contexts: Sequence[str], kwargs: Sequence[dict[str, Any]]) -> list[GenerationRequest]:
        lengths = [len(ids) for ids in self.tokenizer(list(contexts), **self._special_tokens(contexts[0]))["input_ids"]]
        return [GenerationRequest(c, dict(k), n) for c, k, n in zip(contexts, kwargs, lengths)]

    def _batches(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Indices of the requests per batch: same kwargs, longest context first, under the token budget."""
        by_kwargs: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_kwargs.setdefault(_kwargs_key(request.kwargs), []).append(i)
        batches = []
        for indices in by_kwargs.values():
            indices.sort(key=lambda i: (-requests[i].num_tokens, requests[i].context))
            batch: list[int] = []
            for i in indices:
                longest = requests[batch[0]].num_tokens if batch else requests[i].num_tokens
                if batch and (len(batch) >= self.max_batch_size or longest * (len(batch) + 1) > self.batch_tokens):
                    batches.append(batch)
                    batch = []
                batch.append(i)
            if batch:
                batches.append(batch)
        return batches

    def shared_prefix(self, rows: Sequence[Sequence[int]]) -> int:
        """Length of the token prefix all `rows` share and that pays for a forward pass of its own (0: none); every
        row keeps at least one token of its own."""
        if not self.share_prefix or len(rows) < 2:
            return 0
        length = min(len(r) for r in rows) - 1
        first = rows[0]
        for row in rows[1:]:
            same = 0
            while same < length and row[same] == first[same]:
                same += 1
            length = same
        return length if length >= self.min_shared_prefix else 0

    def prefix_to_share(self, rows: Sequence[Sequence[int]], max_gen_toks: int, window: int | None) -> int:
        """`shared_prefix`, or 0 where a sliding attention `window` (None: none) would count the padding that sharing
        puts between the prefix and each row's own tokens: transformers measures the window in cache positions,
        padding included, so once a batch's longest row and its generated tokens outgrow the window, a prefix key
        fewer than `window` positions back could drop out of a query's window. Such a batch is read whole,
        left-padded as HFLM reads it (all padding before the first real token, where it moves no distance)."""
        if window is not None and max(len(r) for r in rows) + max_gen_toks > window:
            return 0
        return self.shared_prefix(rows)

    def _inputs(
        self, model: Any, rows: Sequence[Sequence[int]], shared: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(input ids, attention mask, KV cache or None) of a batch: each row left-padded; with a `shared` prefix,
        the prefix first (its cache computed once and lent to every row), then each row's own tokens left-padded."""
        own = [list(r[shared:]) for r in rows]
        width = max(len(r) for r in own)
        ids = torch.full((len(rows), shared + width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, tokens in enumerate(own):
            ids[i, :shared] = torch.tensor(rows[i][:shared], dtype=torch.long)
            mask[i, :shared] = 1
            ids[i, shared + width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[i, shared + width - len(tokens) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        if not shared:
            return ids, mask, None
        cache = model(input_ids=ids[:1, :shared], use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(rows))
        return ids, mask, cache

    @torch.no_grad()
    def generate(
        self, model: Any, requests: Sequence[GenerationRequest], progress: bool = True, desc: str = "generate"
    ) -> list[str]:
        """The continuation of every request (cut at its first stop string), in the requests' order."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        device = next(model.parameters()).device
        window = sliding_window_of(model)
        out: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc=desc, disable=not progress, leave=False)
        for batch in self._batches(requests):
            kwargs = normalize_gen_kwargs(dict(requests[batch[0]].kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=self.eos_text)
            max_gen_toks = int(kwargs.pop("max_gen_toks"))
            if kwargs.get("do_sample"):
                raise NASError("generate_until with do_sample=true is sampled, not greedy; scores would not repeat.")
            kwargs.pop("do_sample", None)
            kwargs.pop("temperature", None)
            room = self.max_length - max_gen_toks
            if room <= 0:
                raise NASError(
                    f"max_gen_toks={max_gen_toks} leaves no room for a context in the model's {self.max_length} tokens."
                )
            contexts = [requests[i].context for i in batch]
            rows = [ids[-room:] for ids in self.tokenizer(contexts, **self._special_tokens(contexts[0]))["input_ids"]]
            shared = self.prefix_to_share(rows, max_gen_toks, window)
            input_ids, attention, cache = self._inputs(model, rows, shared, device)
            start = input_ids.shape[1]
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                **({_CACHE_KWARG: cache} if cache is not None else {}),
                max_length=start + max_gen_toks,
                stopping_criteria=transformers.StoppingCriteriaList(
                    [_AllStopped(self.tokenizer, until, start, len(batch))]
                ),
                pad_token_id=self.pad_id,
                do_sample=False,
                use_cache=True,
                **kwargs,
            )
            for i, row in zip(batch, generated[:, start:].tolist()):
                text = self.tokenizer.decode(row, skip_special_tokens=True)
                out[i] = postprocess_generated_text(generation=text, stop=until, think_end_token=None)
            bar.update(len(batch))
        bar.close()
        return out
