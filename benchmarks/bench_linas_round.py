"""One LINAS round at LLaMA2-7B's search-space size, per candidate (the old path) vs on index matrices.

The space of LLaMA-NAS on LLaMA2-7B: 32 layers, 2 MLP widths per layer, 3 layer counts. A study holds 50 real
evaluations (accuracy made up from the architecture plus noise; size analytic), and a round fits the SVR
predictor and runs the inner NSGA-II (population 200, 50 generations: about 10,000 candidates). Rounds of the two
paths alternate; printed: the median round time of each, the ratio, and the spread. Both paths choose the same
candidates (checked). Then, on the selections and pools of those rounds replayed, the inner NSGA-II's survivor
selection numbering every row's front (`front_numbers`) vs only the fronts the selection reaches
(`leading_front_numbers`), and the round's unevaluated pool found by row bytes vs int64 row codes: interleaved,
same results (checked), per-round milliseconds and their ratio. Run alone: on a 2-core machine anything else skews
the timings.

    .venv/bin/python benchmarks/bench_linas_round.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import optuna
from omegaconf import OmegaConf

import nas.search.evolution as evolution
from nas.search.encoded_rows import EncodedRows
from nas.search.encoding import SearchEncoding
from nas.search.linas import LinasSampler
from nas.search.objectives import parse_objectives
from nas.search.pareto import front_numbers, leading_front_numbers
from nas.search.study import REFERENCE_ATTR
from nas.supernet.metrics import sub_network_cost
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import ModelShape

LLAMA2_7B = ModelShape(32, 4096, 11008, 32, 32, 128, 32000, False)


def make_study(encoding: SearchEncoding, objectives, analytic, n: int = 50) -> optuna.Study:
    study = optuna.create_study(directions=[o.direction for o in objectives])
    rng = np.random.default_rng(0)
    full = analytic(encoding.space.largest())
    study.set_user_attr(REFERENCE_ATTR, {"values": {"arc_easy": 0.7, "size_gb_fp16": full["size_gb_fp16"]}})
    distributions = encoding.distributions()
    for _ in range(n):
        params = {k: int(rng.integers(0, d.high + 1)) for k, d in distributions.items()}
        sub = encoding.decode(params)
        accuracy = 0.3 + 0.4 * sub.num_layers / 32 + 0.05 * np.mean(sub.mlp_sizes) / 11008 + rng.normal(0, 0.01)
        trial = optuna.trial.create_trial(
            params=params,
            distributions=distributions,
            values=[accuracy, analytic(sub)["size_gb_fp16"]],
            user_attrs={"evaluated": True, "subnet_key": sub.to_json()},
        )
        study.add_trial(trial)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space_cfg = OmegaConf.to_container(OmegaConf.load("conf/search_space/llama_nas.yaml"), resolve=True)
    space = SearchSpace.from_config(space_cfg, LLAMA2_7B)
    encoding = SearchEncoding(space)
    encoded = EncodedRows(encoding)
    objectives = parse_objectives([{"kind": "accuracy", "task": "arc_easy"}, {"kind": "size_gb", "dtype": "fp16"}])

    def analytic(sub):
        return {"size_gb_fp16": sub_network_cost(LLAMA2_7B, sub).size_gb("fp16")}

    def analytic_rows(rows):
        return {"size_gb_fp16": encoded.costs(rows).size_bytes["fp16"] / 1e9}

    study = make_study(encoding, objectives, analytic)
    real = sorted(study.trials, key=lambda t: t.number)
    samplers = {
        "per candidate": lambda: LinasSampler(encoding, objectives, analytic, 50, 10, 200, 50, seed=0),
        "index matrices": lambda: LinasSampler(
            encoding, objectives, analytic, 50, 10, 200, 50, seed=0, analytic_rows=analytic_rows
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in samplers}
    chosen: dict[str, list] = {}
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; space {space.summary().splitlines()[-1].strip()}")
    for _ in range(args.rounds):
        for name, make in samplers.items():
            sampler = make()
            start = time.perf_counter()
            planned = sampler.plan_round(study, real)
            times[name].append(time.perf_counter() - start)
            chosen[name] = [p for p, _, _ in planned]
    assert chosen["per candidate"] == chosen["index matrices"], "the two paths chose different candidates"
    for name, t in times.items():
        print(f"{name:<16} median {statistics.median(t):7.3f} s  (min {min(t):.3f}, max {max(t):.3f}, {len(t)} rounds)")
    ratio = statistics.median(times["per candidate"]) / statistics.median(times["index matrices"])
    print(f"speed-up of a round: {ratio:.2f}x; same {len(chosen['index matrices'])} candidates chosen")
    compare_selection_paths(samplers["index matrices"], study, real, args.rounds)


def compare_selection_paths(make, study: optuna.Study, real: list, rounds: int) -> None:
    """Replay the survivor selections and the unevaluated pools of `rounds` LINAS rounds through both paths."""
    selections, pools = [], []
    ranked, unevaluated = evolution.ranked_survivors, LinasSampler._unevaluated

    def record_selection(loss, count):
        selections.append((loss.copy(), count))
        return ranked(loss, count)

    def record_pool(sampler, archive, evaluated):
        pools.append((sampler, archive.copy(), evaluated.copy()))
        return unevaluated(sampler, archive, evaluated)

    evolution.ranked_survivors, LinasSampler._unevaluated = record_selection, record_pool
    try:
        for _ in range(rounds):
            make().plan_round(study, real)
    finally:
        evolution.ranked_survivors, LinasSampler._unevaluated = ranked, unevaluated

    def every_front():
        return [front_numbers(loss) for loss, _ in selections]

    def leading():
        return [leading_front_numbers(loss, count) for loss, count in selections]

    def by_bytes():
        out = []
        for sampler, archive, evaluated in pools:
            radix, sampler._radix = sampler._radix, None
            out.append(unevaluated(sampler, archive, evaluated)[1])
            sampler._radix = radix
        return out

    def by_codes():
        return [unevaluated(sampler, archive, evaluated)[1] for sampler, archive, evaluated in pools]

    print(f"{len(selections)} survivor selections and {len(pools)} pools ({len(pools[0][1])} rows) of {rounds} rounds:")

    def capped(every, lead):  # rows past the fronts a selection reaches share one number on the leading path
        return np.array_equal(np.minimum(every, lead.max()), lead)

    for label, old, new, same in [
        ("fronts: every row / leading", every_front, leading, capped),
        ("pool: bytes / codes", by_bytes, by_codes, np.array_equal),
    ]:
        assert all(same(a, b) for a, b in zip(old(), new(), strict=True)), label
        spent: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(9):
            for name, run in (("old", old), ("new", new)):
                start = time.perf_counter()
                run()
                spent[name].append((time.perf_counter() - start) / rounds * 1e3)
        ratios = sorted(a / b for a, b in zip(spent["old"], spent["new"]))
        print(
            f"  {label:<28} {statistics.median(spent['old']):6.2f} / {statistics.median(spent['new']):6.2f} ms per round,"
            f" ratio median {statistics.median(ratios):.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f}, 9 interleaved runs)"
        )


if __name__ == "__main__":
    main()
