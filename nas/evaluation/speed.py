"""Measured speed of the live sub-network: prefill and decode tokens per second (warm-up, repeats, median).

Prefill: one full forward pass of `batch_size` x `prompt_len` random tokens (logits of every position,
as an evaluation or training step computes them). Decode: after an untimed prefill that fills the KV
cache, `new_tokens` greedy steps of one token per sequence. CUDA is synchronised around every timed
region. Numbers from a busy machine mean little: `load_before` / `load_after` record the 1-minute
load average next to them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from nas.errors import NASError
from nas.evaluation.hf_compat import cache_kwargs, cache_of


@dataclass
class SpeedResult:
    """Medians (and every repeat) of prefill and decode throughput on one device."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prefill_s: list[float]
    decode_s: list[float]
    batch_size: int
    prompt_len: int
    new_tokens: int
    device: str
    dtype: str
    threads: int
    load_before: float | None
    load_after: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


@dataclass
class ThroughputMeter:
    """Times the model's active sub-network.

    Args:
        batch_size: sequences per forward pass.
        prompt_len: prompt tokens per sequence (prefill, and the decode's starting context).
        new_tokens: generated tokens per sequence in the decode measurement (0 skips it).
        warmup: untimed runs before the repeats.
        repeats: timed runs; the median is reported.
        seed: seeds the random prompt tokens.
        progress: show a progress bar over the timed runs (a long measurement on a busy machine says so).
    """

    batch_size: int = 8
    prompt_len: int = 128
    new_tokens: int = 32
    warmup: int = 1
    repeats: int = 5
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if min(self.batch_size, self.prompt_len, self.repeats) < 1 or self.warmup < 0 or self.new_tokens < 0:
            raise NASError(
                "speed: batch_size, prompt_len and repeats must be >= 1, warmup and new_tokens >= 0 "
                f"(got {self.batch_size}, {self.prompt_len}, {self.repeats}, {self.warmup}, {self.new_tokens})."
            )

    def _timed(
        self, fn: Callable[[Any], Any], device: torch.device, setup: Callable[[], Any] = lambda: None, what: str = ""
    ) -> list[float]:
        """Seconds of `fn(setup())` per repeat; `setup` runs untimed before each run."""
        times = []
        runs = range(self.warmup + self.repeats)
        for i in tqdm(runs, desc=f"speed: {what}", unit="run", disable=not self.progress, leave=False):
            state = setup()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn(state)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= self.warmup:
                times.append(time.perf_counter() - start)
        return times

    @torch.inference_mode()
    def measure(self, model: Any) -> SpeedResult:
        """Prefill and decode throughput of whatever sub-network `model` has active."""
        param = next(model.parameters())
        device = param.device
        generator = torch.Generator().manual_seed(self.seed)
        vocab = int(model.config.vocab_size)
        prompt = torch.randint(0, vocab, (self.batch_size, self.prompt_len), generator=generator).to(device)
        load_before = _load()
        prefill = self._timed(lambda _: model(input_ids=prompt, use_cache=False).logits, device, what="prefill")
        decode = []
        if self.new_tokens:
            decode = self._timed(
                lambda state: self._decode(model, *state), device, lambda: self._prefill(model, prompt), "decode"
            )
        tokens = self.batch_size * self.prompt_len
        return SpeedResult(
            prefill_tokens_per_s=tokens / statistics.median(prefill),
            decode_tokens_per_s=self.batch_size * self.new_tokens / statistics.median(decode) if decode else 0.0,
            prefill_s=prefill,
            decode_s=decode,
            batch_size=self.batch_size,
            prompt_len=self.prompt_len,
            new_tokens=self.new_tokens,
            device=str(device),
            dtype=str(param.dtype).removeprefix("torch."),
            threads=torch.get_num_threads(),
            load_before=load_before,
            load_after=_load(),
        )

    @staticmethod
    def _prefill(model: Any, prompt: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The KV cache after the prompt and the first generated token (untimed set-up of a decode run)."""
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        return cache_of(out), out.logits[:, -1].argmax(dim=-1, keepdim=True)

    def _decode(self, model: Any, cache: Any, token: torch.Tensor) -> None:
        for _ in range(self.new_tokens):
            out = model(input_ids=token, use_cache=True, **cache_kwargs(model, cache))
            cache, token = cache_of(out), out.logits[:, -1].argmax(dim=-1, keepdim=True)
