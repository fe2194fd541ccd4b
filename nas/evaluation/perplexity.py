"""Perplexity of the model's active sub-network on a plain text (WikiText-2 raw test by default).

The text is tokenized once per tokenizer (cached), cut into non-overlapping windows of `seq_len`
tokens, and every token but the first of each window is predicted from the ones before it in its
window. Perplexity is exp(mean NLL) over those predicted tokens.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nas.data.paths import text_source
from nas.errors import NASError

_IGNORE = -100  # label of the last position of each window, which has no next token

# tokenizer -> {sha1 of text -> token ids}; weak keys so a dropped tokenizer frees its tokens.
_TOKEN_CACHE: weakref.WeakKeyDictionary[Any, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()


class PerplexityConfigError(NASError, ValueError):
    """A perplexity setting out of range."""


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity (exp of `nll`), mean NLL per predicted token (nats) and the number of predicted tokens."""

    perplexity: float
    nll: float
    tokens: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """The text's token ids (1-D, int64, no special tokens added), cached per tokenizer and text."""
    per_tokenizer = _TOKEN_CACHE.setdefault(tokenizer, {})
    key = hashlib.sha1(text.encode("utf-8")).hexdigest()
    if key not in per_tokenizer:
        # verbose=False: a whole corpus is longer than model_max_length on purpose; it is windowed below.
        ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        per_tokenizer[key] = torch.tensor(ids, dtype=torch.long)
    return per_tokenizer[key]


def split_windows(tokens: torch.Tensor, seq_len: int) -> list[torch.Tensor]:
    """Non-overlapping windows of `seq_len` tokens; a last window of one token predicts nothing and is dropped."""
    windows = list(torch.split(tokens, seq_len))
    return [w for w in windows if w.numel() >= 2]


def predicted_tokens(num_tokens: int, seq_len: int) -> int:
    """How many tokens the windows predict: all but the first of each window."""
    return num_tokens - math.ceil(num_tokens / seq_len)


def _check_settings(seq_len: int, batch_size: int, max_tokens: int | None) -> None:
    if seq_len < 2:
        raise PerplexityConfigError(f"perplexity.seq_len={seq_len}: a window needs at least 2 tokens.")
    if batch_size < 1:
        raise PerplexityConfigError(f"perplexity.batch_size={batch_size}: use 1 or more.")
    if max_tokens is not None and max_tokens < 2:
        raise PerplexityConfigError(f"perplexity.max_tokens={max_tokens}: use null (the whole text) or 2 or more.")


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    seq_len: int = 512,
    batch_size: int = 4,
    max_tokens: int | None = None,
    progress: bool = True,
    desc: str = "perplexity",
) -> PerplexityResult:
    """Perplexity of `model` (its active sub-network) on `tokens`.

    Args:
        model: a causal LM returning `.logits`; runs on the device of its parameters.
        tokens: 1-D token ids, e.g. from `tokenize`.
        seq_len: window length; windows do not overlap, so each window's first token is not predicted.
        batch_size: windows per forward pass.
        max_tokens: use only the first `max_tokens` tokens (cheap estimates); None for all.
        progress: show a tqdm bar over batches.
        desc: the progress bar's label.
    """
    _check_settings(seq_len, batch_size, max_tokens)
    tokens = tokens[:max_tokens] if max_tokens is not None else tokens
    windows = split_windows(tokens, seq_len)
    if not windows:
        raise PerplexityConfigError(f"The text has {tokens.numel()} tokens; perplexity needs at least 2.")
    device = next(model.parameters()).device
    # Full windows share one length and batch together; a shorter last window runs alone.
    full = [w for w in windows if w.numel() == seq_len]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[w] for w in windows if w.numel() < seq_len]
    # Summed on the device in float64: no host sync per batch, no rounding drift over long texts.
    total_nll = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = 0
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        input_ids = torch.stack(batch).to(device)
        logits = model(input_ids=input_ids, use_cache=False).logits
        # Shift the labels, not the logits: slicing the (batch, seq, vocab) logits would copy them.
        labels = torch.full_like(input_ids, _IGNORE)
        labels[:, :-1] = input_ids[:, 1:]
        batch_nll = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=_IGNORE, reduction="sum"
        )
        total_nll += batch_nll.double()
        total_tokens += input_ids.numel() - input_ids.size(0)
    nll = total_nll.item() / total_tokens
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, tokens=total_tokens)


@dataclass
class PerplexityEvaluator:
    """Perplexity on one text file, built from `conf/perplexity/*.yaml`.

    Args:
        data_file: the text inside the data folder (`paths.data_dir`, else $NAS_DATA_DIR, else ../shared/data).
        text_file: any text file; when set it is used instead of `data_file`.
        data_dir: the data folder (None: $NAS_DATA_DIR, else ../shared/data).
        seq_len, batch_size, max_tokens, progress: as in `perplexity`.
    """

    data_file: str = "wikitext2/wiki.test.raw"
    text_file: str | None = None
    data_dir: str | None = None
    seq_len: int = 512
    batch_size: int = 4
    max_tokens: int | None = None
    progress: bool = True
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        # Check settings and find the file now, before the pipeline loads a model.
        _check_settings(self.seq_len, self.batch_size, self.max_tokens)
        self.path = text_source(self.text_file, self.data_file, self.data_dir, "perplexity.text_file")
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.path.read_text(encoding="utf-8")
        return self._text

    def __call__(self, model: torch.nn.Module, tokenizer: Any, desc: str = "perplexity") -> PerplexityResult:
        """Perplexity of `model`'s active sub-network on the text."""
        tokens = tokenize(tokenizer, self.text)
        return perplexity(model, tokens, self.seq_len, self.batch_size, self.max_tokens, self.progress, desc)
