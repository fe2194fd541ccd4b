"""Tokenisation of (context, continuation) requests exactly as lm-eval's HFLM does it.

HFLM moves trailing spaces of the context into the continuation, encodes context + continuation as
one string and the context alone, and takes the continuation tokens as the tail of the whole past
the context's length. An empty context becomes the prefix token (BOS, else EOS). Inputs longer than
the model's maximum length are cut from the left: the model sees `(context + continuation)[-(L+1):][:-1]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

# lm-eval's default when neither the config nor the tokenizer names a maximum length.
DEFAULT_MAX_LENGTH = 2048


@dataclass(frozen=True)
class EncodedRequest:
    """One request as token ids: `inputs` is what the model reads, `targets` the last len(targets) tokens it scores."""

    inputs: tuple[int, ...]
    targets: tuple[int, ...]

    @property
    def first_scored(self) -> int:
        """Index in `inputs` of the position whose logits predict the first target token."""
        return len(self.inputs) - len(self.targets)


def max_length(model_config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    """HFLM's maximum input length: the config's positions, else the tokenizer's limit, else 2048."""
    config = getattr(model_config, "text_config", None) or model_config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 1e29:  # transformers' "no limit" sentinel is ~1e30
        return int(limit)
    return DEFAULT_MAX_LENGTH


class RequestEncoder:
    """Encodes requests like HFLM's `loglikelihood` (`add_bos_token=None`: the tokenizer's default).

    Args:
        tokenizer: the model's tokenizer.
        max_len: the model's maximum input length (see `max_length`).
        add_bos_token: HFLM's argument of the same name; None keeps the tokenizer's own behaviour.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int, add_bos_token: bool | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.add_bos_token = add_bos_token
        self.prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self._bos_text = str(tokenizer.decode(self.prefix_token_id)) if self.prefix_token_id is not None else None

    def _kwargs(self, text: str) -> dict[str, bool]:
        # HFLM.tok_encode: never add special tokens to a string that already starts with the BOS text.
        if self._bos_text and text.startswith(self._bos_text):
            return {"add_special_tokens": False}
        return {} if self.add_bos_token is None else {"add_special_tokens": self.add_bos_token}

    def _encode_many(self, texts: Sequence[str]) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(texts))
        out: dict[str, list[int]] = {}
        # Batch the strings that share tokenizer arguments (a fast tokenizer encodes batches in Rust).
        by_kwargs: dict[tuple, list[str]] = {}
        for text in unique:
            by_kwargs.setdefault(tuple(sorted(self._kwargs(text).items())), []).append(text)
        for kwargs, group in by_kwargs.items():
            ids = self.tokenizer(group, **dict(kwargs))["input_ids"]
            out.update(zip(group, (list(x) for x in ids)))
        return out

    def encode_text(self, text: str) -> list[int]:
        """A whole text as HFLM's `tok_encode` reads it (what `loglikelihood_rolling` windows)."""
        return list(self.tokenizer(text, **self._kwargs(text))["input_ids"])

    def encode(self, requests: Sequence[tuple[str, str]]) -> list[EncodedRequest]:
        """All requests of a task at once (duplicate strings are encoded once)."""
        split: list[tuple[str, str]] = []
        for context, continuation in requests:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces > 0:
                continuation = context[-n_spaces:] + continuation
                context = context[:-n_spaces]
            split.append((context, continuation))
        texts = [t for c, k in split if c for t in (c, c + k)]
        texts += [k for c, k in split if not c]
        table = self._encode_many(texts)
        encoded = []
        for (context, continuation), (raw_context, raw_continuation) in zip(split, requests):
            if not raw_context:
                # HFLM: empty context -> prefix token, unless the continuation already starts with it.
                cont = self.tokenizer(raw_continuation, add_special_tokens=False)["input_ids"]
                ctx, cont = ([self.prefix_token_id], cont) if cont[0] != self.prefix_token_id else (cont[:1], cont[1:])
            elif not context:
                raise ValueError(f"The context {raw_context!r} is only whitespace; lm-eval cannot score it either.")
            else:
                ctx = table[context]
                cont = table[context + continuation][len(ctx) :]
            if not cont:
                raise ValueError(
                    f"The continuation {raw_continuation!r} encodes to no tokens after {raw_context[-40:]!r}."
                )
            if len(cont) > self.max_len:
                raise ValueError(
                    f"A continuation of {len(cont)} tokens exceeds the model's maximum length {self.max_len}."
                )
            whole = (ctx + cont)[-(self.max_len + 1) :][:-1]
            encoded.append(EncodedRequest(tuple(whole), tuple(cont)))
        return encoded
