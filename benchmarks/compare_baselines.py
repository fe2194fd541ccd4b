"""A searched front against the pruning baselines, at the same sizes, on enough items to tell them apart.

    python benchmarks/compare_baselines.py --run-dir multirun_outputs/quickstart/run --tasks arc_easy piqa --limit 500

Takes the Pareto set of a finished pipeline run (its trained super-network), re-scores every member, the
pre-trained model and the fine-tuned super-network's full network on the first `--limit` items of each task,
prunes the pre-trained model with every baseline at the given ratios (the `nas.baselines` job, same scorer and
items), and prints one table: size, accuracy with its standard error per task, and for each baseline the most
accurate sub-network of the same or smaller size with the difference. Standard error of an accuracy p on n
items: sqrt(p (1 - p) / n); a difference is called real here when it exceeds twice the combined error.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir

from nas.io.atomic import write_json
from nas.search.context import build_scorer
from nas.search.objectives import parse_objectives
from nas.stages.baselines import run_baselines
from nas.supernet.subnetwork import SubNetwork

CONF = str(Path(__file__).resolve().parents[1] / "conf")
METHODS = ["llm_pruner", "slicegpt", "magnitude_2_4", "wanda_2_4", "sparsegpt_2_4", "layer_drop", "width_cut"]


def task_metric(details: dict[str, Any], task: str) -> float:
    for metric in ("acc_norm", "acc"):
        if f"{task}.{metric}" in details:
            return float(details[f"{task}.{metric}"])
    raise KeyError(task)


def stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def search_rows(cfg: Any, run_dir: Path, objectives: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]]:
    """The fine-tuned full network and every Pareto sub-network of `run_dir`, scored by the same scorer; kept in
    `cache` (keyed by the run, objectives and items) so a re-run does not score them again."""
    key = {"run": str(run_dir.resolve()), "objectives": objectives, "limit": cfg.limit}
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["key"] == key:
            return stored["rows"]
    from nas import load_model

    model, tokenizer = load_model(str(run_dir / "train" / "supernet"))
    scorer = build_scorer(cfg, model, tokenizer, parse_objectives(objectives))
    pareto = json.loads((run_dir / "search" / "pareto.json").read_text())
    rows = []
    for label, sub in [("fine-tuned full network", SubNetwork.full(model.shape))] + [
        (f"sub-network {row['number']}", SubNetwork.from_dict(row["subnetwork"])) for row in pareto
    ]:
        start = time.perf_counter()
        with model.sub_network(sub):  # the scorer measures the model as it runs
            values, details = scorer.measure(model, sub)
        rows.append({"model": label, "kind": "search", "size": values["size_gb_fp16"], "details": details})
        print(f"{label}: {values} ({time.perf_counter() - start:.0f} s)", flush=True)
    write_json({"key": key, "rows": rows}, cache)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "piqa"])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--ratios", type=float, nargs="+", default=None, help="one list for every method")
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("multirun_outputs/compare_baselines"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    objectives = [{"kind": "accuracy", "task": t} for t in args.tasks] + [{"kind": "size_gb", "dtype": "fp16"}]
    overrides = [
        f"objectives={json.dumps(objectives)}".replace('"', ""),
        f"limit={args.limit}",
        f"baseline=[{','.join(args.methods)}]",
        f"calibration.num_samples={args.calibration_samples}",
        "progress=true",
    ]
    if args.ratios:
        overrides.append(f"ratio=[{','.join(str(r) for r in args.ratios)}]")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("baselines", overrides=overrides)

    summary = run_baselines(cfg, args.out)  # each (method, ratio) cached in its folder: a re-run continues
    reference = summary["reference"]
    rows: list[dict[str, Any]] = [
        {
            "model": "pre-trained (GGUF Q4_1 dequantized)",
            "kind": "reference",
            "size": reference["values"]["size_gb_fp16"],
            "details": reference["details"],
        }
    ]
    rows += search_rows(cfg, args.run_dir, objectives, args.out / "search_scores.json")
    for entry in summary["baselines"]:
        rows.append(
            {
                "model": f"{entry['method']} {entry['ratio']:g}",
                "kind": "baseline",
                "size": entry["values"]["size_gb_fp16"],
                "details": entry["details"],
                "seconds": entry["seconds"],
                "compressed": (entry.get("compressed_bytes") or {}).get("fp16"),
            }
        )

    n = args.limit
    header = f"{'model':38} {'GB fp16':>8} " + " ".join(f"{t + ' (±SE)':>16}" for t in args.tasks)
    print(f"\nItems per task: first {n} (ARC-Easy test, PIQA validation, ...); SE = sqrt(p(1-p)/n)\n{header}")
    for r in rows:
        cells = " ".join(
            f"{100 * task_metric(r['details'], t):7.1f} ± {100 * stderr(task_metric(r['details'], t), n):4.1f}  "
            for t in args.tasks
        )
        extra = f"  pruned in {r['seconds']:.0f} s" if "seconds" in r else ""
        extra += f"  (2:4 compressed {r['compressed'] / 1e9:.4f} GB)" if r.get("compressed") else ""
        print(f"{r['model']:38} {r['size']:8.4f} {cells}{extra}")
    print("\nEach baseline against the most accurate sub-network of the same or smaller size (mean over tasks):")
    searched = [r for r in rows if r["kind"] == "search"]
    for b in (r for r in rows if r["kind"] == "baseline"):
        fits = [s for s in searched if s["size"] <= b["size"] + 1e-9]
        if not fits:
            print(f"  {b['model']:36} no sub-network as small ({b['size']:.4f} GB)")
            continue
        best = max(fits, key=lambda s: sum(task_metric(s["details"], t) for t in args.tasks))
        diffs = []
        for t in args.tasks:
            a, c = task_metric(best["details"], t), task_metric(b["details"], t)
            se = math.hypot(stderr(a, n), stderr(c, n))
            diffs.append(f"{t} {100 * (a - c):+5.1f} ± {100 * se:.1f}{' *' if abs(a - c) > 2 * se else ''}")
        print(f"  {b['model']:36} vs {best['model']:18} ({best['size']:.4f} GB): " + ", ".join(diffs))
    print("(* : outside twice the combined standard error)")


if __name__ == "__main__":
    main()
