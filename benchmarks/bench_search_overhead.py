"""Search overhead: the wall-clock a search spends outside its objective, per algorithm, side by side with whittle.

Run: `.venv/bin/python benchmarks/bench_search_overhead.py [--rounds 3] [--whittle-python /path/to/venv/bin/python]`

Two measurements, each in interleaved rounds (every algorithm once per round, in turn) on one worker, one thread,
a SQLite study, the embedded SmolLM2-135M and the LLaMA-NAS search space (layer count and per-layer MLP width),
40 evaluations, population 10, each algorithm's default settings otherwise (LINAS: 200 x 50 candidates scored
by its predictors per round, 10 evaluations per round):

1. A 0.5-second objective (`--seconds`): the values of a fixed function of the sub-network's parameter count,
   returned after sleeping 0.5 s, so the search's own work is all that differs. Prints the overhead, (wall -
   time inside the objective) / wall, per algorithm: median and range over rounds (target < 5%, goal 1%).
2. The real problem: WikiText-2 perplexity on the first 128 test tokens vs parameters, in the `klein` space (layer
   count, MLP width, heads and embedding width: the space of Klein et al., whittle's paper). Prints each algorithm's
   wall-clock, seconds per evaluation, overhead and sub-networks per minute, LINAS's wall-clock over NSGA-II's
   (target <= 1.25), and, with `--whittle-python` (a Python environment with whittle 0.6.0, which pins
   transformers < 4.54 and so cannot share ours: `python -m venv /tmp/whittle && /tmp/whittle/bin/pip install
   torch==2.13.0 torchvision==0.28.0 whittle==0.6.0`; where `import whittle` then fails with "operator torchvision::nms
   does not exist", the index's torchvision wheel was built for another torch: `/tmp/whittle/bin/pip uninstall -y
   torchvision`, which the search does not use), whittle's `multi_objective_search` on its GPT super-network
   of the same shape with the same objective on the same tokens, the same budget and thread count
   (`benchmarks/whittle_search_side.py`), drawing from the same choices (so the sub-networks evaluated are alike in
   size): sub-networks per minute ours / whittle's (target >= 1).

Our side keeps freed host memory for reuse, as `python -m nas.search` does (`host.keep_freed_memory`);
`--release-freed-memory` leaves glibc's allocator as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from nas.io.host_memory import keep_freed_memory
from nas.search.context import prepare
from nas.search.worker import run_worker
from nas.stages.search import evaluate_reference
from nas.supernet.subnetwork import SubNetwork

CONF = str(Path(__file__).resolve().parents[1] / "conf")
ALGORITHMS = ("nsga2", "linas", "random")


class TimedScorer:
    """The study's scorer, timed; with `seconds`, a stand-in objective of that duration (values from the parameter
    count) instead of the real one."""

    def __init__(self, inner: Any, seconds: float | None) -> None:
        self.inner, self.seconds = inner, seconds
        self.analytic, self.analytic_rows, self.shape = inner.analytic, inner.analytic_rows, inner.shape
        self.spent = 0.0
        self.full_params = inner.analytic(inner.full())["params"]

    def __call__(self, sub: SubNetwork | None) -> Any:
        start = time.perf_counter()
        try:
            if self.seconds is None:
                return self.inner(sub)
            params = self.inner.analytic(sub or self.inner.full())["params"]
            time.sleep(self.seconds)
            return {"perplexity": 8.65 * (self.full_params / params) ** 3, "params": params}, {}
        finally:
            self.spent += time.perf_counter() - start


def run_ours(algorithm: str, args: argparse.Namespace, root: Path, seconds: float | None) -> dict[str, float]:
    overrides = [
        f"search={algorithm}",
        f"search_space={args.space if seconds is None else 'llama_nas'}",
        f"search.seed={args.seed}",
        f"search.n_trials={args.budget}",
        f"search.population_size={args.population}",
        "objectives=[{kind: perplexity}, {kind: params}]",
        f"perplexity.max_tokens={args.tokens}",
        f"perplexity.seq_len={args.tokens}",
        "perplexity.batch_size=1",
        "wandb.mode=disabled",
        f"paths.output_dir={root}",
    ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    ctx = prepare(cfg, root / f"{algorithm}-{time.monotonic_ns()}")
    scorer = TimedScorer(ctx.scorer, seconds)
    ctx.scorer = scorer  # type: ignore[assignment]
    evaluate_reference(ctx)
    scorer.spent = 0.0
    start = time.perf_counter()
    evaluated = run_worker(ctx, progress=True)  # the progress bar is on by default: its cost counts
    wall = time.perf_counter() - start
    return {"evaluations": evaluated, "wall": wall, "objective": scorer.spent}


def run_whittle(args: argparse.Namespace, tokens_file: Path, space: str, strategy: str) -> dict[str, float]:
    script = Path(__file__).with_name("whittle_search_side.py")
    command = [args.whittle_python, str(script), "--tokens", str(tokens_file), "--budget", str(args.budget)]
    command += ["--space", space]
    command += ["--strategy", strategy, "--threads", str(args.threads), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def for_whittle(args: argparse.Namespace, path: Path) -> str:
    """The first `--tokens` (+1) WikiText-2 test tokens as our perplexity objective reads them (saved to `path`),
    and our search space's choices per dimension for this model (JSON), for whittle's side."""
    overrides = ["objectives=[{kind: perplexity}, {kind: params}]", f"search_space={args.space}"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    from omegaconf import OmegaConf

    from nas.evaluation.perplexity import tokenize
    from nas.instantiate import instantiate
    from nas.supernet.search_space import SearchSpace

    model, tokenizer = instantiate(cfg.model)
    ids = tokenize(tokenizer, instantiate(cfg.perplexity).text).reshape(-1)[: args.tokens + 1]
    np.save(path, ids.numpy())
    space = SearchSpace.from_config(OmegaConf.to_container(cfg.search_space, resolve=True), model.config)
    return json.dumps({dim: list(values) for dim, values in space.choices.items() if len(values) > 1})


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def overhead(run: dict[str, float]) -> float:
    return 100.0 * (run["wall"] - run["objective"]) / run["wall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=0.5, help="duration of the stand-in objective")
    parser.add_argument("--tokens", type=int, default=128, help="WikiText-2 test tokens of the real objective")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--space", default="klein", help="search space of the real problem (both sides)")
    parser.add_argument("--whittle-python", help="python of an environment with whittle 0.6.0 (see above)")
    parser.add_argument("--whittle-strategies", nargs="+", default=["random_search", "nsga2"])
    parser.add_argument("--skip", choices=("stand-in", "real"), help="leave one measurement out")
    parser.add_argument(
        "--release-freed-memory",
        action="store_true",
        help="leave glibc's malloc as it is instead of keeping freed memory, as `python -m nas.search` does",
    )
    args = parser.parse_args()
    print(f"freed host memory kept for reuse: {not args.release_freed_memory and keep_freed_memory()}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(
        f"load average before: {os.getloadavg()[0]:.2f}; threads {args.threads}; {args.budget} evaluations, "
        f"population {args.population}, {args.rounds} interleaved rounds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.skip != "stand-in":
            runs: dict[str, list[dict[str, float]]] = {a: [] for a in args.algorithms}
            for _ in range(args.rounds):
                for algorithm in args.algorithms:
                    runs[algorithm].append(run_ours(algorithm, args, root, args.seconds))
            print(f"\n1. A {args.seconds}-second objective: overhead = (wall - objective) / wall, median (range):")
            for algorithm, done in runs.items():
                per_eval = [1000 * (r["wall"] - r["objective"]) / r["evaluations"] for r in done]
                print(
                    f"   {algorithm:<8} overhead {spread([overhead(r) for r in done])} %   "
                    f"{spread(per_eval, '{:.1f}')} ms per evaluation   wall {spread([r['wall'] for r in done], '{:.1f}')} s"
                )
        if args.skip != "real":
            tokens_file = root / "tokens.npy"
            space = for_whittle(args, tokens_file) if args.whittle_python else ""
            real: dict[str, list[dict[str, float]]] = {a: [] for a in args.algorithms}
            theirs: dict[str, list[dict[str, float]]] = {s: [] for s in args.whittle_strategies}
            for _ in range(args.rounds):
                for algorithm in args.algorithms:
                    real[algorithm].append(run_ours(algorithm, args, root, None))
                for strategy in theirs if args.whittle_python else ():
                    theirs[strategy].append(run_whittle(args, tokens_file, space, strategy))
            print(
                f"\n2. WikiText-2 perplexity on {args.tokens} tokens vs parameters, search space {args.space}, "
                "median (range):"
            )
            rates: dict[str, list[float]] = {}
            for name, done in [*real.items(), *((f"whittle {s}", d) for s, d in theirs.items() if d)]:
                rates[name] = [60.0 * r["evaluations"] / r["wall"] for r in done]
                per_eval = [r["objective"] / r["evaluations"] for r in done]
                print(
                    f"   {name:<22} {spread(rates[name], '{:.1f}')} sub-networks/min   "
                    f"evaluation {spread(per_eval, '{:.3f}')} s   overhead {spread([overhead(r) for r in done])} %   "
                    f"wall {spread([r['wall'] for r in done], '{:.1f}')} s"
                )
            if "linas" in real and "nsga2" in real:
                ratios = [a["wall"] / b["wall"] for a, b in zip(real["linas"], real["nsga2"])]
                print(f"   LINAS / NSGA-II wall-clock per round: {spread(ratios, '{:.3f}')} (target <= 1.25)")
            for strategy, done in theirs.items():
                if not done:
                    continue
                print(f"   whittle's torch: {done[0].get('torch')}")
                for algorithm in real:
                    ratios = [a / b for a, b in zip(rates[algorithm], rates[f"whittle {strategy}"])]
                    print(
                        f"   sub-networks/min, {algorithm} / whittle {strategy}: {spread(ratios, '{:.2f}')} (target >= 1)"
                    )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
