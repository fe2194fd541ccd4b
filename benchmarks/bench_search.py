"""Search-efficiency benchmark: hypervolume against real evaluations for LINAS, NSGA-II and random.

Run: `.venv/bin/python benchmarks/bench_search.py [--seeds 0 1] [--tokens 256] [--threads 1]`

A cheap but real problem: SmolLM2-135M (the embedded default), the LLaMA-NAS search space (layer
count and per-layer MLP width: 3 x 2^30 encodings), objectives WikiText-2 perplexity on the first
`--tokens` test tokens vs parameter count. Each algorithm runs through the same worker loop as
`python -m nas.search` (Optuna study in a SQLite file, duplicate look-ups, budget), with the
LLaMA-NAS settings (population 50; NSGA-II crossover 0.9 / eta 15, mutation 0.02 / eta 20).
Perplexity is deterministic, so a sub-network met again by another run or seed is served from an
in-process cache (the value a re-evaluation would give); every run still counts it as one of its
real evaluations. Prints the hypervolume (normalised by the unmodified model, perplexity bounded at
`--ppl-bound` x its value) after 25..250 evaluations per algorithm, mean and spread over seeds, and
the target ratio: LINAS within 100 evaluations vs NSGA-II after 250 (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from nas.search.context import prepare
from nas.search.outputs import hypervolume_rows
from nas.search.worker import run_worker
from nas.stages.search import evaluate_reference
from nas.supernet.subnetwork import SubNetwork

CONF = str(Path(__file__).resolve().parents[1] / "conf")
CHECKPOINTS = (25, 50, 75, 100, 150, 200, 250)


class MemoScorer:
    """The study's scorer with a cache shared across runs (perplexity is deterministic)."""

    def __init__(self, inner: Any, cache: dict[str, Any], counter: dict[str, float]) -> None:
        self.inner, self.cache, self.counter = inner, cache, counter
        self.analytic = inner.analytic

    def __call__(self, sub: SubNetwork | None) -> Any:
        key = "reference" if sub is None else sub.to_json()
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self.inner(sub)
            self.counter["evaluations"] += 1
            self.counter["seconds"] += time.perf_counter() - start
        return self.cache[key]


def run_one(
    algorithm: str, seed: int, budget: int, args: argparse.Namespace, root: Path, cache: dict, counter: dict
) -> list[float]:
    overrides = [
        f"search={algorithm}",
        f"search.seed={seed}",
        f"search.n_trials={budget}",
        f"search.population_size={args.population}",
        *([f"search.linas.round_size={args.linas_round_size}"] if algorithm == "linas" else []),
        "search.progress=false",
        f"objectives=[{{kind: perplexity, hv_bound: {args.ppl_bound}}}, {{kind: params}}]",
        f"perplexity.max_tokens={args.tokens}",
        f"perplexity.seq_len={args.tokens}",
        "perplexity.batch_size=1",
        "wandb.mode=disabled",
        f"paths.output_dir={root}",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    out = root / f"{algorithm}-{seed}"
    ctx = prepare(cfg, out)
    ctx.scorer = MemoScorer(ctx.scorer, cache, counter)  # type: ignore[assignment]
    evaluate_reference(ctx)
    run_worker(ctx, progress=args.progress)
    rows = hypervolume_rows(ctx.study, ctx.objectives)
    (out / "hypervolume.json").write_text(json.dumps(rows))
    return [r["hypervolume"] for r in rows]


def at(history: list[float], n: int) -> float | None:
    return history[n - 1] if len(history) >= n else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tokens", type=int, default=256, help="WikiText-2 test tokens scored per sub-network")
    parser.add_argument("--budget", type=int, default=250, help="real evaluations of nsga2 and random")
    parser.add_argument("--linas-budget", type=int, default=100)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--linas-round-size", type=int, default=10, help="real evaluations per LINAS predictor round")
    parser.add_argument("--ppl-bound", type=float, default=100.0, help="hypervolume bound: x the model's perplexity")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nas.search.linas").setLevel(logging.INFO)  # each round's predictor quality
    print(f"load average before: {os.getloadavg()[0]:.2f}; threads {args.threads}; seeds {args.seeds}")
    cache: dict[str, Any] = {}
    counter = {"evaluations": 0, "seconds": 0.0}
    budgets = {"linas": args.linas_budget, "nsga2": args.budget, "random": args.budget}
    histories: dict[str, list[list[float]]] = {a: [] for a in budgets}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for algorithm, budget in budgets.items():
                t0 = time.perf_counter()
                history = run_one(algorithm, seed, budget, args, Path(tmp), cache, counter)
                histories[algorithm].append(history)
                print(
                    f"  {algorithm:<6} seed {seed}: {len(history)} evaluations, final hypervolume {history[-1]:.4f} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    print("\nHypervolume (normalised by the unmodified model) after n real evaluations, mean over seeds (min-max):")
    header = "algorithm " + "".join(f"{n:>24}" for n in CHECKPOINTS)
    print(header + "\n" + "-" * len(header))
    for algorithm, runs in histories.items():
        cells = []
        for n in CHECKPOINTS:
            values = [v for v in (at(h, n) for h in runs) if v is not None]
            cells.append(f"{statistics.fmean(values):.4f} ({min(values):.3f}-{max(values):.3f})" if values else "-")
        print(f"{algorithm:<10}" + "".join(f"{c:>24}" for c in cells))
    ratios = []
    for linas, nsga2 in zip(histories["linas"], histories["nsga2"]):
        ratios.append(max(linas[: args.linas_budget]) / nsga2[min(len(nsga2), args.budget) - 1])
    print(
        f"\nLINAS after {args.linas_budget} / NSGA-II after {args.budget} evaluations, per seed: "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + f"; mean {statistics.fmean(ratios):.3f} (target >= 0.95)"
    )
    print(
        f"{counter['evaluations']} distinct sub-networks evaluated ({counter['seconds']:.0f} s in evaluation), "
        f"{time.perf_counter() - start:.0f} s in all; load average after: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
