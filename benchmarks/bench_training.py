"""Training benchmark: time per optimizer step of each strategy, and our Lightning loop vs plain PyTorch.

Run: `.venv/bin/python benchmarks/bench_training.py [--model smollm2_135m] [--rounds 5]`

Candidates are timed side by side in one process, interleaved in rounds (A, B, C, A, B, C, ...);
medians over rounds; the load average is printed before and after (on 2 cores one busy neighbour
slows torch 5-20x, so only trust a run on an idle machine). Freed host memory is kept for reuse, as every
command of the project does (`host.keep_freed_memory`); `--release-freed-memory` leaves glibc's malloc as
it is: a training step then faults in about 1 GiB of fresh pages (printed per step), more in Lightning's
loop than in the plain one, which was most of the gap between the two.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from nas import SearchSpace, load_model
from nas.io.host_memory import keep_freed_memory, page_faults
from nas.training.module import SuperNetModule
from nas.training.samplers import UniformSampler
from nas.training.strategies import AlternatingStrategy, SandwichStrategy, StandardStrategy, Strategy


def strategy_steps(model, batch, sampler, strategy: Strategy, steps: int) -> Callable[[], None]:
    """`steps` optimizer steps of `strategy` (forward, backward, AdamW step), outside Lightning."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    counter = {"step": 0}

    def run() -> None:
        for _ in range(steps):
            strategy.step(model, batch, sampler, lambda loss: loss.backward(), counter["step"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            counter["step"] += 1

    return run


class StepTimer(L.Callback):
    """Wall time of each training batch inside Lightning's loop: from the start of one batch to the start
    of the next (the last one: to the end of training), so Lightning's work between batches (fetching the
    next batch, logging, hooks) counts, as the plain loop's does."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start: float | None = None

    def _lap(self) -> None:
        now = time.perf_counter()
        if self._start is not None:
            self.times.append(now - self._start)
        self._start = now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._lap()

    def on_train_end(self, trainer, pl_module) -> None:
        self._lap()
        self._start = None


def lightning_steps(model, batch, sampler, steps: int) -> Callable[[], float]:
    """Seconds per step of our LightningModule (standard strategy) over `steps` steps, first one excluded."""

    def run() -> float:
        timer = StepTimer()
        module = SuperNetModule(model, StandardStrategy(), sampler, lr=1e-6, grad_clip=0.0)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps + 1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        trainer.fit(module, DataLoader([batch] * (steps + 1), batch_size=None))
        return statistics.mean(timer.times[1:])

    return run


def plain_steps(model, batch, steps: int) -> Callable[[], float]:
    """Seconds per step of a plain PyTorch loop: forward with labels, backward, AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def run() -> float:
        times = []
        for _ in range(steps + 1):
            start = time.perf_counter()
            model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        return statistics.mean(times[1:])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--space", default="llama_nas")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-strategies", action="store_true", help="only section 2 (the loops)")
    parser.add_argument(
        "--release-freed-memory",
        action="store_true",
        help="leave glibc's malloc as it is (hands freed memory back to the OS) instead of keeping it",
    )
    args = parser.parse_args()
    kept = not args.release_freed_memory and keep_freed_memory()
    print(f"freed host memory kept for reuse: {kept}")

    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}; torch threads: {torch.get_num_threads()}")
    model, _ = load_model(args.model)
    model.train()
    space = SearchSpace.from_config(OmegaConf.load(f"conf/search_space/{args.space}.yaml"), model.config)
    sampler = UniformSampler(space, seed=0)
    ids = torch.randint(
        0, model.shape.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0)
    )
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    tokens = ids.numel()

    # 1. Strategies: seconds per optimizer step; alternating over a whole cycle (full step + sub-network step).
    if not args.skip_strategies:
        strategies(model, batch, sampler, args)

    # 2. Our Lightning loop vs a plain PyTorch loop on the same model and batch.
    steps = 3
    lightning, plain = lightning_steps(model, batch, sampler, steps), plain_steps(model, batch, steps)
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    faults: dict[str, list[float]] = {"lightning": [], "plain": []}
    for _ in range(args.rounds):
        for name, run in (("lightning", lightning), ("plain", plain)):
            before = page_faults()
            times[name].append(run())
            faults[name].append((page_faults() - before) / (steps + 1))
    ours, theirs = statistics.median(times["lightning"]), statistics.median(times["plain"])
    ratios = [p / lt for lt, p in zip(times["lightning"], times["plain"])]
    print(
        f"\n2. tokens/s ({steps} timed steps per round, {args.rounds} rounds): Lightning loop {tokens / ours:.0f}, "
        f"plain PyTorch loop {tokens / theirs:.0f}, ratio {theirs / ours:.3f} (per round [{min(ratios):.3f}, "
        f"{max(ratios):.3f}]); page faults per step (the first included: Lightning's optimizer state is new each "
        f"round) {statistics.median(faults['lightning']):,.0f} vs {statistics.median(faults['plain']):,.0f}"
    )
    print(f"\nload average after: {os.getloadavg()}")


def strategies(model, batch, sampler, args) -> None:
    """Section 1: seconds per optimizer step of each strategy, interleaved rounds."""
    candidates = {
        "standard": strategy_steps(model, batch, sampler, StandardStrategy(), 2),
        "alternating": strategy_steps(model, batch, sampler, AlternatingStrategy(), 2),
        "sandwich k=2": strategy_steps(model, batch, sampler, SandwichStrategy(k=2), 2),
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) / 2)
    per_step = {name: statistics.median(values) for name, values in samples.items()}
    print(
        f"\n1. seconds per optimizer step ({args.batch}x{args.seq_len} tokens, {args.space} space, medians of {args.rounds} rounds)"
    )
    for name, seconds in per_step.items():
        print(f"   {name:<14} {seconds:7.3f} s   ratio to standard {seconds / per_step['standard']:.3f}")


if __name__ == "__main__":
    main()
