"""whittle's side of `bench_search_overhead.py`: its search loop on the same model shape, objective and budget.

Runs in whittle's own environment (whittle 0.6.0 pins transformers < 4.54, which this project's cannot share):
`bench_search_overhead.py --whittle-python <venv>/bin/python` calls it once per round and reads the JSON line it
prints. The model is whittle's GPT super-network in SmolLM2-135M's shape (30 layers, 576 wide, 9 heads in 3
query groups, MLP 1536, vocabulary 49152, tied embeddings), with seeded random weights (the time of an
evaluation depends on the shape, not on the weights); the objective is whittle's own (`search_sub_networks.py`):
the sub-network's perplexity on the given tokens and its parameter count (`compute_parameters`), with its
`multi_objective_search` loop, over the same sub-networks as our side's search space (`--space`).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from litgpt import Config
from syne_tune.config_space import choice
from whittle.metrics.parameters import compute_parameters
from whittle.models.gpt import GPT
from whittle.search.search import multi_objective_search

SMOLLM2_135M = {
    "name": "SmolLM2-135M-shape",
    "block_size": 2048,
    "vocab_size": 49152,
    "padded_vocab_size": 49152,
    "n_layer": 30,
    "n_embd": 576,
    "n_head": 9,
    "n_query_groups": 3,
    "head_size": 64,
    "rotary_percentage": 1.0,
    "parallel_residual": False,
    "bias": False,
    "norm_class_name": "RMSNorm",
    "norm_eps": 1e-5,
    "mlp_class_name": "LLaMAMLP",
    "intermediate_size": 1536,
    "rope_base": 100000,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", required=True, help="a .npy file of token ids (the objective's text)")
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--strategy", default="random_search", help="whittle's search strategy (nsga2, ...)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", required=True, help='JSON of each dimension\'s choices: {"num_layers": [...], ...}')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = Config(**SMOLLM2_135M)
    model = GPT(config).eval()
    model.max_seq_length = 2048
    tokens = torch.from_numpy(np.load(args.tokens)).long()[None, :]
    # The same sub-networks as ours: each dimension's choices as our search space resolves them for this shape
    # (e.g. `klein`: layer count, MLP width, heads and embedding width, uniform across layers), drawn by whittle's
    # own loop and samplers (syne-tune), and set with whittle's `set_sub_network` (whittle's own space, with an
    # MLP ratio of the embedding width, cannot express an MLP width chosen on its own).
    choices = json.loads(args.space)
    search_space = {dim: choice(list(values)) for dim, values in choices.items()}
    full = {
        "num_layers": config.n_layer,
        "mlp": config.intermediate_size,
        "heads": config.n_head,
        "hidden": config.n_embd,
    }

    def set_sub_network(sub: dict) -> None:
        picked = {**full, **sub}
        layers = int(picked["num_layers"])
        model.set_sub_network(
            sub_network_n_embd=int(picked["hidden"]),
            sub_network_intermediate_size=[int(picked["mlp"])] * layers,
            sub_network_num_heads=[int(picked["heads"])] * layers,
            sub_network_n_layers=layers,
        )

    seconds = {"objective": 0.0}

    @torch.no_grad()
    def objective(sub: dict) -> tuple[float, float]:
        start = time.perf_counter()
        set_sub_network(sub)
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[0, 1:])
        values = float(torch.exp(loss)), float(compute_parameters(model))
        model.reset_super_network()
        seconds["objective"] += time.perf_counter() - start
        return values

    start = time.perf_counter()
    results = multi_objective_search(
        objective, search_space, search_strategy=args.strategy, num_samples=args.budget, seed=args.seed, verbose=False
    )
    wall = time.perf_counter() - start
    print(
        json.dumps(
            {
                "evaluations": len(results["configs"]),
                "wall": wall,
                "objective": seconds["objective"],
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
