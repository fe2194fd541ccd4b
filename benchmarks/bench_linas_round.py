"""One LINAS round at LLaMA2-7B's search-space size, per candidate (the old path) vs on index matrices.

The space of LLaMA-NAS on LLaMA2-7B: 32 layers, 2 MLP widths per layer, 3 layer counts. A study holds 50 real
evaluations (accuracy made up from the architecture plus noise; size analytic), and a round fits the SVR
predictor and runs the inner NSGA-II (population 200, 50 generations: about 10,000 candidates). Rounds of the two
paths alternate; printed: the median round time of each, the ratio, and the spread. Both paths choose the same
candidates (checked). Run alone: on a 2-core machine anything else skews the timings.

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

from nas.search.encoded_rows import EncodedRows
from nas.search.encoding import SearchEncoding
from nas.search.linas import LinasSampler
from nas.search.objectives import parse_objectives
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


if __name__ == "__main__":
    main()
