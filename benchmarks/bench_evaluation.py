"""Evaluation benchmark: our loop vs `lm_eval.simple_evaluate` + HFLM, on the same live sub-networks.

Run: `.venv/bin/python benchmarks/bench_evaluation.py [--subnets 10] [--arc-limit 200] [--mmlu-limit 2]
[--tasks arc_easy,mmlu,gsm8k] [--gen-limit 20] [--rounds 1] [--warmup 1]`

For each task (ARC-Easy, first `--arc-limit` test questions; MMLU 0-shot, first `--mmlu-limit` questions
of each of the 57 subjects; any other lm-eval task by name, first `--gen-limit` items: GSM8K 5-shot with
greedy generation, WikiText rolling log-likelihood) and each of `--subnets` seeded sub-networks of the
LLaMA-NAS search space, back to back on one loaded SmolLM2-135M, interleaved (ours, lm-eval, ours, ...; with
`--rounds N` each side evaluates each sub-network N times, which side goes first alternating, and the spread of the
per-round ratios is printed; `--warmup N` untimed evaluations per side of the first sub-network come first, so
neither side pays the process's first-touch costs in its timings):

- ours: `Evaluator` (lm-eval's task definitions built once per process, outside the timing) `.evaluate`;
- lm-eval: `simple_evaluate` with HFLM (batch 16) wrapping the same live model, on lm-eval's own task
  objects prebuilt once on the same documents (no hub, no task index per call).

Prints per task: summed wall-clock of each and the speed-up, how many items have identical per-item metrics
(and, for generation, identical text), the largest log-likelihood difference, the share of wall-clock
outside the model's forward passes (ours: around decoder, head and log-softmax; lm-eval: around
`HFLM._model_call`; not measured for generation), tokens read per evaluation, and each side's matrix-multiply
FLOPs on the first sub-network (counted in the first warm-up round: their ratio is the speed-up equally fast kernels
would give; the time ratio over it is what our loop gains beyond doing less work). The 1-minute load
average is printed before and after: on 2 cores one busy neighbour slows torch 5-20x. Freed host memory is
kept for reuse, as every command does, for both sides alike (`--release-freed-memory`: glibc's default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from nas import SearchSpace, load_model
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.lm_eval_reference import make_hflm, reference_for, reference_items, run_reference
from nas.evaluation.registry import load_task
from nas.io.host_memory import keep_freed_memory

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
    """Tokens HFLM reads per evaluation of log-likelihood requests: every distinct input once (its
    one-token-continuation dedup); 0 for other request types."""
    built = evaluator.tasks[name]
    requests = [i.args for d in built.docs if d.request_type == "loglikelihood" for i in d.instances]
    encoded = evaluator.encoder.encode(requests) if requests else []
    return sum(len(x) for x in {e.inputs for e in encoded})


def compare(mine: dict[str, Any], ref: dict[str, Any]) -> tuple[bool, float]:
    """(every per-item metric and generated text identical, largest |d log-likelihood|) of one item."""
    same = all(
        np.allclose(np.asarray(mine[k], float), np.asarray(v, float), rtol=1e-6, atol=1e-9)
        for k, v in ref.items()
        if k not in ("requests", "resps") and k in mine
    )
    if "generated" in mine:
        return same and mine["generated"] == ref["resps"], 0.0
    lls = [r[0] if isinstance(r, list | tuple) else r for r in ref["resps"]]
    return same, float(np.max(np.abs(np.asarray(mine["lls"]) - np.asarray(lls))))


def run_reference_on(lm: Any, reference: Any, model: Any, sub: Any) -> Any:
    """lm-eval's `simple_evaluate` of one task on the sub-network, live."""
    with model.sub_network(sub):
        return run_reference(lm, [reference])


def warm_up(sides: list[Callable[[int], Any]], rounds: int) -> list[int] | None:
    """Untimed evaluations of each side, alike: a process's first evaluation can pay first-touch costs (fresh heap
    pages, kernel set-up) that a search's hundreds of evaluations do not, and would fall on whichever side went
    first. The first round also counts each side's matrix-multiply FLOPs (None without a round): their ratio is
    the speed-up that equally fast kernels would give. Each side is called with the round's number."""
    if rounds == 0:
        return None
    flops = []
    for side in sides:
        with FlopCounterMode(display=False) as counter:
            side(0)
        flops.append(counter.get_total_flops())
    for round_ in range(1, rounds):
        for side in sides:
            side(round_)
    return flops


def bench_task(
    name: str, limit: int, model: Any, tokenizer: Any, subs: list[Any], rounds: int, warmup: int
) -> dict[str, Any]:
    task = load_task(name, source="local")
    start = time.perf_counter()
    evaluator = Evaluator.for_model(model, tokenizer, [task], limit=limit, progress=False)
    build_ours = time.perf_counter() - start
    start = time.perf_counter()
    reference = reference_for(evaluator.tasks[name])
    build_theirs = time.perf_counter() - start
    lm = make_hflm(model, tokenizer, batch_size=16)
    inside_theirs = timed_model_call(lm, model)
    flops = warm_up(
        [
            # A checkpoint id per round: the evaluator's results cache would answer a repeated one.
            lambda round_: evaluator.evaluate(model, subs[0], checkpoint_id=f"bench-warmup-{round_}"),
            lambda round_: run_reference_on(lm, reference, model, subs[0]),
        ],
        warmup,
    )
    del inside_theirs[:]
    rows = []
    mismatches = items = 0
    max_dll = 0.0
    for index, sub in enumerate(subs):
        ours_s, theirs_s, ours_forward, theirs_forward = [], [], 0.0, 0.0
        for round_ in range(rounds):
            # Alternate which side goes first, so a slow minute of the machine falls on both alike.
            for side in ("ours", "theirs") if (index + round_) % 2 == 0 else ("theirs", "ours"):
                if side == "ours":
                    start = time.perf_counter()
                    ours = evaluator.evaluate(model, sub, with_items=True, checkpoint_id=f"bench-{index}-{round_}")
                    ours_s.append(time.perf_counter() - start)
                    ours_forward += evaluator.last_timer.forward_s
                    continue
                before = sum(inside_theirs)
                start = time.perf_counter()
                output = run_reference_on(lm, reference, model, sub)[name]
                theirs_s.append(time.perf_counter() - start)
                theirs_forward += sum(inside_theirs) - before
        theirs = reference_items(output, reference)
        for mine, ref in zip(ours[name].items, theirs, strict=True):
            same, dll = compare(mine, ref)
            items += 1
            mismatches += not same
            max_dll = max(max_dll, dll)
        rows.append(
            {
                "sub": sub.describe(),
                "score": ours[name].score,
                "ours_s": sum(ours_s),
                "theirs_s": sum(theirs_s),
                "ours_forward": ours_forward,
                "theirs_forward": theirs_forward,
                "round_ratios": [t / o for o, t in zip(ours_s, theirs_s)],
            }
        )
        spread = (
            "" if rounds == 1 else f" (rounds {min(rows[-1]['round_ratios']):.2f}-{max(rows[-1]['round_ratios']):.2f})"
        )
        print(
            f"  {name:8} sub {index}: {sub.describe():28}  {ours[name].metric} {ours[name].score:.3f}  "
            f"ours {sum(ours_s):6.1f} s  lm-eval {sum(theirs_s):6.1f} s  ratio {sum(theirs_s) / sum(ours_s):5.2f}{spread}",
            flush=True,
        )
    return {
        "task": name,
        "items": evaluator.tasks[name].num_items,
        "generative": bool(evaluator.tasks[name].generation),
        "rows": rows,
        "mismatches": mismatches,
        "compared": items,
        "max_dll": max_dll,
        "tokens_ours": evaluator.tasks[name].num_tokens(),
        "tokens_theirs": lm_eval_tokens(evaluator, name),
        "flops": flops,
        "build_ours": build_ours,
        "build_theirs": build_theirs,
    }


def report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    ours = sum(r["ours_s"] for r in rows)
    theirs = sum(r["theirs_s"] for r in rows)
    ratios = [r["theirs_s"] / r["ours_s"] for r in rows]
    rounds = [ratio for r in rows for ratio in r["round_ratios"]]
    print(f"\n{result['task']}: {result['items']} items x {len(rows)} sub-networks")
    print(
        f"  wall-clock       ours {ours:8.1f} s   lm-eval {theirs:8.1f} s   speed-up {theirs / ours:.2f}x (median per sub-network {statistics.median(ratios):.2f}x)"
    )
    if len(rounds) > len(rows):
        print(
            f"  per round        median {statistics.median(rounds):.2f}x, {min(rounds):.2f}-{max(rounds):.2f} over {len(rounds)} rounds"
        )
    if not result["generative"]:
        print(
            f"  outside forward  ours {1 - sum(r['ours_forward'] for r in rows) / ours:8.1%}     lm-eval {1 - sum(r['theirs_forward'] for r in rows) / theirs:8.1%}"
        )
    if result["tokens_theirs"]:
        print(
            f"  tokens / eval    ours {result['tokens_ours']:8d}     lm-eval {result['tokens_theirs']:8d}     ratio {result['tokens_theirs'] / result['tokens_ours']:.2f}x"
        )
    if result["flops"]:
        ours_flops, theirs_flops = result["flops"]
        print(
            f"  matmul GFLOP     ours {ours_flops / 1e9:8.1f}     lm-eval {theirs_flops / 1e9:8.1f}     ratio {theirs_flops / ours_flops:.2f}x"
            " (sub-network 0; SDPA's CPU kernel is not counted)"
        )
    print(
        f"  items            {result['compared'] - result['mismatches']}/{result['compared']} identical (every per-item metric"
        f"{', generated text' if result['generative'] else ''}), max |d loglik| {result['max_dll']:.2e}"
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
    parser.add_argument("--gen-limit", type=int, default=20, help="items of any other task (GSM8K, WikiText, ...)")
    parser.add_argument("--tasks", default="arc_easy,mmlu")
    parser.add_argument(
        "--rounds", type=int, default=1, help="evaluations per side and sub-network, the side going first alternating"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed evaluations per side of the first sub-network before timing"
    )
    parser.add_argument(
        "--release-freed-memory",
        action="store_true",
        help="leave glibc's malloc as it is instead of keeping freed memory, as every command does",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1.")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more.")
    # Process-wide: both sides run under the same allocator settings.
    print(f"freed host memory kept for reuse: {not args.release_freed_memory and keep_freed_memory()}")
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
        bench_task(name, limits.get(name, args.gen_limit), model, tokenizer, subs, args.rounds, args.warmup)
        for name in args.tasks.split(",")
    ]
    for result in results:
        report(result)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
