"""Does super-network training work? WikiText-2 perplexity of the full model and of sub-networks,
for several checkpoints of the same model (as loaded, importance-reordered, fine-tuned ...).

Run: `.venv/bin/python benchmarks/table_subnetwork_perplexity.py loaded=smollm2_135m reordered=<folder> ...`

Each argument is `label=<model name or folder>`. Sub-networks come from the `llama_nas` space,
resolved on each checkpoint (so a reordered model keeps its most important layers): the full model,
the space's smallest, and two mid-sized ones.
"""

from __future__ import annotations

import argparse
import os

import torch
from omegaconf import OmegaConf

from nas import SearchSpace, load_model
from nas.data.paths import data_file
from nas.evaluation.perplexity import perplexity, tokenize


def mid_sized(space: SearchSpace) -> dict[str, dict[str, int]]:
    """Two mid-sized encodings: fewer layers with full MLPs, and all layers with every other MLP halved."""
    params = space.parameters()
    big = {name: choices[-1] for name, choices in params.items()}
    fewer_layers = {**big, "num_layers": params["num_layers"][1]}
    half_mlps = {
        name: (choices[0] if name.startswith("mlp_") and int(name[4:]) % 2 else choices[-1])
        for name, choices in params.items()
    }
    return {"26 layers": fewer_layers, "30 layers, half MLPs": half_mlps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="label=<model name or folder>")
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average: {os.getloadavg()}")
    text = data_file("wikitext2/wiki.test.raw").read_text()
    space_cfg = OmegaConf.load("conf/search_space/llama_nas.yaml")
    rows: dict[str, dict[str, float]] = {}
    for item in args.models:
        label, _, source = item.partition("=")
        model, tokenizer = load_model(source)
        tokens = tokenize(tokenizer, text)
        space = SearchSpace.from_config(space_cfg, model.config)
        subs = {
            "full": space.largest(),
            "smallest": space.smallest(),
            **{name: space.decode(enc) for name, enc in mid_sized(space).items()},
        }
        rows[label] = {}
        for name, sub in subs.items():
            with model.sub_network(sub):
                result = perplexity(model, tokens, seq_len=args.seq_len, max_tokens=args.max_tokens, progress=False)
            rows[label][name] = result.perplexity
        print(label, {k: round(v, 2) for k, v in rows[label].items()}, flush=True)
    columns = list(next(iter(rows.values())))
    print(f"\nWikiText-2 test perplexity (first {args.max_tokens} tokens, windows of {args.seq_len}):")
    print(f"{'model':<28}" + "".join(f"{c:>24}" for c in columns))
    for label, values in rows.items():
        print(f"{label:<28}" + "".join(f"{values[c]:>24.2f}" for c in columns))


if __name__ == "__main__":
    main()
