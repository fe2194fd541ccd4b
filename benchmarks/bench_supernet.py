"""Super-network benchmark: activation cost, live vs exported speed, speed-up vs FLOPs reduction.

Run: `.venv/bin/python benchmarks/bench_supernet.py [--model smollm2_135m] [--rounds 9]`

Every figure is a ratio of candidates timed side by side in one process, interleaved in rounds
(A, B, C, A, B, C, ...) so that a load change hits all of them alike; medians over rounds. The
machine's load average is printed before and after: on 2 cores one busy neighbour slows torch 5-20x.
Freed host memory is kept for reuse as every command of the project does (`host.keep_freed_memory`,
nas/io/host_memory.py); `--release-freed-memory` leaves glibc's allocator as it is, to see what that costs
(page faults per forward are printed). In one process the two cannot alternate: once the heap has grown,
releasing settings leave it grown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from nas import SubNetwork, export_sub_network, load_model
from nas.io.host_memory import keep_freed_memory, page_faults
from nas.supernet.metrics import flops_per_token


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_samples(
    candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each candidate in each of `rounds` interleaved rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(timed(fn))
    return samples


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in interleaved rounds."""
    return {name: statistics.median(v) for name, v in interleaved_samples(candidates, rounds, warmup).items()}


def faults_per_call(fn: Callable[[], object], calls: int = 2) -> float:
    """Minor page faults (pages the kernel maps in and zeroes on first touch) per call of `fn`."""
    before = page_faults()
    for _ in range(calls):
        fn()
    return (page_faults() - before) / calls


def allocated_bytes(fn: Callable[[], object]) -> int:
    """Bytes the CPU allocator hands out while `fn` runs (torch profiler, allocations only)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(max(event.self_cpu_memory_usage, 0) for event in prof.events())


def sub_networks(shape) -> dict[str, SubNetwork]:
    n, m, h, d = shape.num_layers, shape.intermediate_size, shape.num_heads, shape.hidden_size
    half = m // 2
    dropped = tuple(i for i in range(n) if i % 5 != 4)  # every fifth layer dropped
    return {
        "uniform 50% MLP": SubNetwork(tuple(range(n)), (half,) * n, (h,) * n, d),
        "hetero, dropped layers": SubNetwork(
            dropped,
            tuple(half if i % 2 else m for i in dropped),
            tuple(h if i % 3 else h - shape.group_size for i in dropped),
            d,
        ),
        f"{3 * n // 4} layers, 50% MLP": SubNetwork(
            tuple(range(3 * n // 4)), (half,) * (3 * n // 4), (h,) * (3 * n // 4), d
        ),
        f"{n // 2} layers, 50% MLP": SubNetwork(tuple(range(n // 2)), (half,) * (n // 2), (h,) * (n // 2), d),
        f"{2 * n // 3} layers, 2/3 heads, 75% MLP": SubNetwork(
            tuple(range(2 * n // 3)), (3 * m // 4,) * (2 * n // 3), (h - shape.group_size,) * (2 * n // 3), d
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9)
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
    shape = model.shape
    ids = torch.randint(0, shape.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0))
    subs = sub_networks(shape)
    full = SubNetwork.full(shape)

    def forward(m: torch.nn.Module) -> Callable[[], object]:
        return lambda: m(ids, use_cache=False)

    def live(sub: SubNetwork) -> Callable[[], object]:
        def run() -> object:
            with model.sub_network(sub):
                return model(ids, use_cache=False)

        return run

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        exported = {
            name: AutoModelForCausalLM.from_pretrained(
                export_sub_network(model, sub, Path(tmp) / str(i)), trust_remote_code=True
            ).eval()
            for i, (name, sub) in enumerate({"full": full, **subs}.items())
        }

        # 1. Activation cost against one forward pass, and memory it allocates.
        hetero = subs["hetero, dropped layers"]
        before = {p.data_ptr() for p in model.parameters()}

        def activate() -> None:
            model.set_sub_network(hetero)
            model.reset_super_network()

        activation = statistics.median(timed(activate) for _ in range(200)) / 2  # two switches per call
        activation_bytes = allocated_bytes(activate)
        assert {p.data_ptr() for p in model.parameters()} == before
        times = interleaved_medians(
            {"live": live(hetero), "exported": forward(exported["hetero, dropped layers"])}, args.rounds
        )
        live_alloc = allocated_bytes(live(hetero))
        export_alloc = allocated_bytes(forward(exported["hetero, dropped layers"]))
        print(
            f"\n1. set_sub_network: {activation * 1e3:.3f} ms = {activation / times['live'] * 100:.4f}% of one "
            f"{args.batch}x{args.seq_len} forward ({times['live']:.3f} s); it allocated {activation_bytes} bytes."
        )
        print(
            f"   bytes allocated by one forward: live sub-network {live_alloc / 2**20:.1f} MiB, exported "
            f"{export_alloc / 2**20:.1f} MiB (ratio {live_alloc / export_alloc:.3f}; weight copies would add "
            f"{sum(p.numel() for p in exported['hetero, dropped layers'].parameters()) * 4 / 2**20:.0f} MiB)"
        )

        # 2. Live sub-network vs the same sub-network exported.
        print(f"\n2. live / exported tokens/s ({args.batch}x{args.seq_len}, {args.rounds} interleaved rounds, medians)")
        for name in ("uniform 50% MLP", "hetero, dropped layers"):
            t = interleaved_medians({"live": live(subs[name]), "exported": forward(exported[name])}, args.rounds)
            print(
                f"   {name:<34} live {t['live']:.3f} s  exported {t['exported']:.3f} s  ratio {t['exported'] / t['live']:.3f}"
            )

        # 3. Exported speed-up over the full model divided by the analytic FLOPs reduction, per round.
        print(
            f"\n3. exported speed-up / FLOPs reduction (LM head and attention scores in FLOPs), {args.rounds} "
            "interleaved rounds: median [min, max] of the per-round ratios; page faults per forward"
        )
        sizes = [name for name in subs if "layers" in name and "hetero" not in name]
        t = interleaved_samples({name: forward(exported[name]) for name in ["full", *sizes]}, args.rounds)
        full_flops = flops_per_token(shape, full, args.seq_len)
        for name in ["full", *sizes]:
            reduction = full_flops / flops_per_token(shape, {"full": full, **subs}[name], args.seq_len)
            ratios = [f / s / reduction for f, s in zip(t["full"], t[name])]
            speedup = statistics.median(t["full"]) / statistics.median(t[name])
            print(
                f"   {name:<34} speed-up {speedup:.2f}x  FLOPs reduction {reduction:.2f}x  ratio "
                f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]  "
                f"faults {faults_per_call(forward(exported[name])):,.0f}"
            )

    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
