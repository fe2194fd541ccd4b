"""Evaluation benchmark: our loop vs `lm_eval.simple_evaluate` + HFLM, on the same live sub-networks.

Run: `.venv/bin/python benchmarks/bench_evaluation.py [--subnets 10] [--arc-limit 200] [--mmlu-limit 2]`

For each task (ARC-Easy, first `--arc-limit` test questions; MMLU 0-shot, first `--mmlu-limit` questions
of each of the 57 subjects) and each of `--subnets` seeded sub-networks of the LLaMA-NAS search space,
back to back on one loaded SmolLM2-135M, interleaved (ours, lm-eval, ours, lm-eval, ...):

- ours: `Evaluator` (tasks built once per process, outside the timing) `.evaluate(model, sub)`;
- lm-eval: `simple_evaluate` with HFLM (batch 16) wrapping the same live model, on lm-eval's own task
  definitions prebuilt once on the same documents (no hub, no task index per call).

Prints per task: summed wall-clock of each and the speed-up, whether every item's prediction (argmax of
log-likelihood, and of length-normalised log-likelihood) is identical, the largest log-likelihood
difference, the share of wall-clock outside the model's forward passes (ours: around decoder, head and
log-softmax; lm-eval: around `HFLM._model_call`), and tokens read per evaluation. The 1-minute load
average is printed before and after: on 2 cores one busy neighbour slows torch 5-20x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from nas import SearchSpace, load_model
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.lm_eval_reference import make_hflm, reference_items, reference_tasks, run_reference
from nas.evaluation.registry import load_task

CONF = Path(__file__).resolve().parents[1] / "conf"


def sync(model: Any) -> None:
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def timed_model_call(lm: Any, model: Any) -> list[float]:
    """Wrap HFLM's `_model_call` so the seconds spent inside the model's forward are recorded."""
    spent: list[float] = []
    inner = lm._model_call

    def call(*args: Any, **kwargs: Any) -> Any:
        sync(model)
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        sync(model)
        spent.append(time.perf_counter() - start)
        return out

    lm._model_call = call
    return spent


def lm_eval_tokens(evaluator: Evaluator, name: str) -> int:
    """Tokens HFLM reads per evaluation: every distinct input once (its one-token-continuation dedup)."""
    built = evaluator.tasks[name]
    encoded = evaluator.encoder.encode([r for item in built.items for r in item.requests])
    return sum(len(x) for x in {e.inputs for e in encoded})


def bench_task(name: str, limit: int, model: Any, tokenizer: Any, subs: list[Any]) -> dict[str, Any]:
    task = load_task(name, source="local")
    start = time.perf_counter()
    evaluator = Evaluator.for_model(model, tokenizer, [task], limit=limit, progress=False)
    build_ours = time.perf_counter() - start
    docs = task.load()
    start = time.perf_counter()
    lm_tasks = reference_tasks(task, [docs[i] for i in evaluator.tasks[name].doc_indices])
    build_theirs = time.perf_counter() - start
    lm = make_hflm(model, tokenizer, batch_size=16)
    inside_theirs = timed_model_call(lm, model)
    rows = []
    mismatches = items = 0
    max_dll = 0.0
    for index, sub in enumerate(subs):
        start = time.perf_counter()
        ours = evaluator.evaluate(model, sub, with_items=True, checkpoint_id=f"bench-{index}")[name]
        ours_s = time.perf_counter() - start
        ours_forward = evaluator.last_timer.forward_s
        before = sum(inside_theirs)
        start = time.perf_counter()
        with model.sub_network(sub):
            output = run_reference(lm, lm_tasks)
        theirs_s = time.perf_counter() - start
        theirs_forward = sum(inside_theirs) - before
        theirs = reference_items(output, lm_tasks)
        for mine, ref in zip(ours.items, theirs, strict=True):
            items += 1
            mismatches += mine["pred"] != ref["pred"] or mine["pred_norm"] != ref["pred_norm"]
            max_dll = max(max_dll, float(np.max(np.abs(np.array(mine["lls"]) - np.array(ref["lls"])))))
        rows.append(
            {
                "sub": sub.describe(),
                "score": ours.score,
                "ours_s": ours_s,
                "theirs_s": theirs_s,
                "ours_forward": ours_forward,
                "theirs_forward": theirs_forward,
            }
        )
        print(
            f"  {name:8} sub {index}: {sub.describe():28}  {ours.metric} {ours.score:.3f}  "
            f"ours {ours_s:6.1f} s  lm-eval {theirs_s:6.1f} s  ratio {theirs_s / ours_s:5.2f}",
            flush=True,
        )
    return {
        "task": name,
        "items": len(evaluator.tasks[name].items),
        "rows": rows,
        "mismatches": mismatches,
        "compared": items,
        "max_dll": max_dll,
        "tokens_ours": evaluator.tasks[name].num_tokens(),
        "tokens_theirs": lm_eval_tokens(evaluator, name),
        "build_ours": build_ours,
        "build_theirs": build_theirs,
    }


def report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    ours = sum(r["ours_s"] for r in rows)
    theirs = sum(r["theirs_s"] for r in rows)
    ratios = [r["theirs_s"] / r["ours_s"] for r in rows]
    print(f"\n{result['task']}: {result['items']} items x {len(rows)} sub-networks")
    print(
        f"  wall-clock       ours {ours:8.1f} s   lm-eval {theirs:8.1f} s   speed-up {theirs / ours:.2f}x (median per sub-network {statistics.median(ratios):.2f}x)"
    )
    print(
        f"  outside forward  ours {1 - sum(r['ours_forward'] for r in rows) / ours:8.1%}     lm-eval {1 - sum(r['theirs_forward'] for r in rows) / theirs:8.1%}"
    )
    print(
        f"  tokens / eval    ours {result['tokens_ours']:8d}     lm-eval {result['tokens_theirs']:8d}     ratio {result['tokens_theirs'] / result['tokens_ours']:.2f}x"
    )
    print(
        f"  predictions      {result['compared'] - result['mismatches']}/{result['compared']} identical (acc and acc_norm argmax), max |d loglik| {result['max_dll']:.2e}"
    )
    print(
        f"  task building    ours {result['build_ours']:.1f} s once; lm-eval tasks {result['build_theirs']:.1f} s once (excluded above)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--subnets", type=int, default=10)
    parser.add_argument("--arc-limit", type=int, default=200)
    parser.add_argument("--mmlu-limit", type=int, default=2, help="questions per MMLU subject")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--tasks", default="arc_easy,mmlu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    space_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "search_space" / "llama_nas.yaml"))
    space = SearchSpace.from_config(space_cfg, model.config)  # type: ignore[arg-type]
    subs = [space.sample(seed) for seed in range(args.subnets)]
    device = next(model.parameters()).device
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {len(subs)} sub-networks of llama_nas")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    limits = {"arc_easy": args.arc_limit, "mmlu": args.mmlu_limit}
    results = [
        bench_task(name, limits.get(name, args.arc_limit), model, tokenizer, subs) for name in args.tasks.split(",")
    ]
    for result in results:
        report(result)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
