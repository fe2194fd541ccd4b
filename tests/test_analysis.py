"""`nas.analysis` and `python -m nas.analyze`: the report of a real (tiny) search, architecture
probabilities and selection tables checked against hand-computed answers, quantized results read
leniently, and bad run directories refused with one clear message."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.analysis.architecture import choice_distribution, dimensions, per_layer_probability, top_count
from nas.analysis.options import AnalysisOptions
from nas.analysis.quantized import read_quantized
from nas.analysis.report import analyze_run, build_document
from nas.analysis.run import Evaluation, RunData
from nas.analysis.selection import select
from nas.errors import NASError
from nas.search.objectives import Objective
from nas.stages.search import run_search
from nas.supernet.subnetwork import SubNetwork

CONF = str(Path(__file__).resolve().parents[1] / "conf")
ROOT = Path(__file__).resolve().parents[1]
TEXT = "\n".join(f"Line {i}: a report shows which sub-networks of {i % 5} layers win." for i in range(300))

ACC = Objective("accuracy", "maximize", ("arc_easy",))
SIZE = Objective("size_gb", "minimize")
THROUGHPUT = Objective("throughput", "maximize", mode="prefill")
PPL = Objective("perplexity", "minimize", hv_bound=10.0)


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    """A finished LINAS search on the tiny model: perplexity vs parameters, 10 evaluations."""
    tmp = tmp_path_factory.mktemp("search")
    text = tmp / "text.txt"
    text.write_text(TEXT)
    overrides = [
        "model=tiny_llama",
        "objective=perplexity_vs_params",
        f"perplexity.text_file={text}",
        "perplexity.max_tokens=512",
        "perplexity.seq_len=128",
        "search=linas",
        "search.population_size=4",
        "search.n_trials=10",
        "search.linas.inner_population=16",
        "search.linas.generations=3",
        "search.progress=false",
        "wandb.mode=disabled",
        f"paths.output_dir={tmp / 'run'}",
    ]
    run_search(compose_config("search", overrides), tmp / "run")
    return tmp / "run"


def self_contained(html: str) -> None:
    images = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    stripped = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "http" not in stripped and "src=" not in stripped.replace('src=""', "")
    assert "<link" not in stripped and "<script" not in stripped


def test_report_of_a_search_run(search_dir, tmp_path):
    out = tmp_path / "report"
    result = analyze_run(search_dir, out)
    names = {Path(p).name for p in result["figures"]}
    assert names == {
        "pareto_perplexity_vs_params.png",
        "choices_num_layers_perplexity.png",
        "per_layer_mlp_perplexity.png",
        "hypervolume.png",
        "predictors.png",
    }
    for path in result["figures"]:
        data = Path(path).read_bytes()
        assert Path(path).parent == out / "figures" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8000
    html = (out / "report.html").read_text()
    self_contained(html)
    assert html.count("<img") == 5 and "<table>" in html
    md = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(linked) == sorted(f"figures/{n}" for n in names) and all((out / p).is_file() for p in linked)
    for heading in ("## Pareto fronts", "## Selected sub-networks", "## Architecture", "## Search progress"):
        assert heading in md
    summary = json.loads((search_dir / "summary.json").read_text())
    assert result["evaluations"] == summary["evaluations"] == 10
    assert f"Real evaluations: {summary['evaluations']}" in md
    # The recomputed hypervolume is the search's own, evaluation by evaluation.
    written = [float(r["hypervolume"]) for r in csv.DictReader((search_dir / "hypervolume.csv").open())]
    recomputed = [r["hypervolume"] for r in result["progress"]["hypervolume"]]
    assert recomputed == pytest.approx(written) and len(recomputed) == 10
    assert result["progress"]["predictors"] and {r["objective"] for r in result["progress"]["predictors"]} == {
        "perplexity"
    }
    # The Pareto set is the search's own.
    assert [r["trial"] for r in result["pareto_set"]] == sorted(
        (p["number"] for p in json.loads((search_dir / "pareto.json").read_text())),
        key=lambda n: next(r["perplexity"] for r in result["pareto_set"] if r["trial"] == n),
    )
    assert json.loads((out / "analysis.json").read_text())["study_name"] == "linas-seed0"


def test_selected_rows_obey_their_rules_on_a_real_run(search_dir, tmp_path):
    result = analyze_run(search_dir, tmp_path / "r", size_fractions=[0.9, 0.75], perplexity_tolerance=0.1)
    rows = result["selected"]["perplexity vs params"]
    ref = rows[0]
    assert ref["selection"] == "unmodified model" and ref["ratio"] == pytest.approx(1.0)
    trials = [r for r in csv.DictReader((search_dir / "trials.csv").open()) if r["evaluated"] == "True"]
    values = {int(r["number"]): (float(r["perplexity"]), float(r["params"])) for r in trials}
    ok = {n: v for n, v in values.items() if v[0] <= ref["perplexity"] * 1.1}
    if ok:
        assert rows[1]["trial"] in ok and rows[1]["params"] == min(v[1] for v in ok.values())
    for row, fraction in zip(rows[2:], (0.9, 0.75), strict=True):
        fits = {n: v for n, v in values.items() if v[1] <= fraction * ref["params"]}
        if fits:
            assert row["perplexity"] == pytest.approx(min(v[0] for v in fits.values()))
        else:
            assert row["description"].startswith("none found")
    assert list(csv.DictReader((tmp_path / "r" / "selected.csv").open()))[0]["pair"] == "perplexity vs params"


def test_cli_reads_a_pipeline_run_with_quantized_results(search_dir, tmp_path):
    pipeline = tmp_path / "pipeline_run"
    shutil.copytree(search_dir, pipeline / "search", ignore=shutil.ignore_patterns("report"))
    front = json.loads((search_dir / "pareto.json").read_text())
    reference = json.loads((search_dir / "reference.json").read_text())["values"]
    entries = [
        {
            "trial": p["number"],
            "method": "int8",
            "values": {"perplexity": p["perplexity"] * 1.01},
            "footprint_bytes": 1000 + i,
            "details": {"prefill_tokens_per_s": 900.0, "decode_tokens_per_s": 40.0 + i},
        }
        for i, p in enumerate(front)
    ]
    entries += [
        {
            "trial": "reference",
            "method": "int8",
            "values": {"perplexity": reference["perplexity"]},
            "footprint_bytes": 5000,
            "details": {"decode_tokens_per_s": 30.0},
        }
    ]
    (pipeline / "quantized.json").write_text(json.dumps(entries))
    # The pipeline's timing of the Pareto set and of the unmodified model (quantize/speed.json).
    speeds = [
        {"trial": p["number"], "prefill_tokens_per_s": 2000.0, "decode_tokens_per_s": 60.0 + i}
        for i, p in enumerate(front)
    ]
    speeds.append({"trial": "reference", "prefill_tokens_per_s": 1500.0, "decode_tokens_per_s": 50.0})
    (pipeline / "speed.json").write_text(json.dumps(speeds))
    from nas.stages.analyze import run_analysis

    result = run_analysis(compose_config("analyze", [f"run_dir={pipeline}", "analysis.size_fractions=[0.7]"]))
    assert Path(result["out_dir"]) == pipeline / "report" and result["quantized_methods"] == ["int8"]
    rows = result["selected"]["perplexity vs params"]
    assert rows[0]["int8_gb"] == pytest.approx(5000 / 1e9) and len(rows) == 3  # reference, same ppl, 0.7x
    pareto = {r["trial"]: r for r in result["pareto_set"]}
    assert all(pareto[p["number"]]["int8_quality"] == pytest.approx(p["perplexity"] * 1.01) for p in front)
    assert "INT8" in (pipeline / "report" / "report.md").read_text()
    self_contained((pipeline / "report" / "report.html").read_text())
    # Throughput was not an objective: the timed Pareto set gets its own plot and columns.
    assert (pipeline / "report" / "figures" / "pareto_perplexity_vs_throughput_decode.png").is_file()
    assert rows[0]["decode_tokens_per_s"] == 50.0 and rows[0]["int8_decode"] == 30.0  # the unmodified model
    assert all(pareto[p["number"]]["decode_tokens_per_s"] == 60.0 + i for i, p in enumerate(front))
    assert all(pareto[p["number"]]["int8_decode"] == 40.0 + i for i, p in enumerate(front))
    assert "decode tok/s" in (pipeline / "report" / "report.md").read_text()


def evaluation(number: int, values: dict[str, float], layers: int, mlp: tuple[int, ...]) -> Evaluation:
    sub = SubNetwork(tuple(range(layers)), mlp, (4,) * layers, 64)
    return Evaluation(number, values, sub)


def crafted(evals: list[Evaluation], objectives: list[Objective], reference: dict[str, float], choices=None) -> RunData:
    space = {"num_layers": [3, 4], **{f"mlp_{i}": [64, 128] for i in range(4)}} if choices is None else choices
    return RunData(Path("."), "crafted", objectives, reference, evals, space_name="crafted", space_choices=space)


def architecture_example() -> list[Evaluation]:
    rows = [
        (0.9, 4, (64, 128, 64, 128)),
        (0.8, 3, (64, 64, 128)),
        (0.7, 4, (128, 128, 128, 128)),
        (0.6, 3, (64, 128, 128)),
        (0.5, 3, (128, 128, 128)),
    ]
    # Trial numbers out of order: ranking is by accuracy, not by number.
    return [
        evaluation(n, {"arc_easy": acc, "size_gb_fp16": 1.0}, k, m) for n, (acc, k, m) in zip((4, 2, 0, 3, 1), rows)
    ]


def test_architecture_probabilities_match_a_hand_computed_example():
    evals = architecture_example()
    dims = dimensions(crafted(evals, [ACC, SIZE], {}).space_choices)
    assert dims["num_layers"].choices == (3, 4) and dims["mlp"].per_layer and dims["mlp"].num_layers == 4
    layers = choice_distribution(evals, ACC, dims["num_layers"], (60, 40, 20))
    assert layers.counts == {60: 3, 40: 2, 20: 1}  # ceil(0.6 x 5) = 3, ceil(2) = 2, ceil(1) = 1
    assert layers.probabilities[60] == pytest.approx({3: 1 / 3, 4: 2 / 3})
    assert layers.probabilities[40] == pytest.approx({3: 0.5, 4: 0.5})
    assert layers.probabilities[20] == {3: 0.0, 4: 1.0}
    mlp = per_layer_probability(evals, ACC, dims["mlp"], (100, 40, 20))
    assert mlp.value == 64
    # Top 40%: the first two (4 layers 64/128/64/128; 3 layers 64/64/128); layer 3 only in the first.
    assert mlp.probabilities[40] == pytest.approx([1.0, 0.5, 0.5, 0.0]) and mlp.kept[40] == [2, 2, 2, 1]
    assert mlp.probabilities[20] == [1.0, 0.0, 1.0, 0.0]
    # All five: layer 0 is small in 3 of 5; layer 3 is kept by the two 4-layer networks, both 128.
    assert mlp.probabilities[100] == pytest.approx([0.6, 0.2, 0.2, 0.0]) and mlp.kept[100] == [5, 5, 5, 2]
    # Perplexity ranks the other way: lowest first.
    ppl = [Evaluation(e.number, {"perplexity": 10 - 10 * e.values["arc_easy"]}, e.subnetwork) for e in evals]
    assert choice_distribution(ppl, PPL, dims["num_layers"], (40,)).probabilities[40] == pytest.approx({3: 0.5, 4: 0.5})
    assert top_count(50, 20) == 10 and top_count(7, 50) == 4 and top_count(24, 15) == 4  # ceil(3.5), ceil(3.6)
    assert top_count(7, 10) == 1 and top_count(0, 50) == 0


def test_spaces_without_per_layer_mlp_or_layer_choice_are_noted(tmp_path):
    evals = [
        evaluation(i, {"arc_easy": 0.1 * i, "size_gb_fp16": 1.0 + i}, 4, (m,) * 4)
        for i, m in enumerate((64, 128, 96, 64, 128))
    ]
    run = crafted(evals, [ACC, SIZE], {"arc_easy": 0.5, "size_gb_fp16": 6.0}, choices={"mlp": [64, 96, 128]})
    doc, data = build_document(run, tmp_path, AnalysisOptions(mlp_percentiles=(40,)))
    notes = data["architecture"]["notes"]
    assert any("layer count is not searched" in n for n in notes) and any(
        "one choice for all layers" in n for n in notes
    )
    assert [p.name for p in doc.figures] == [
        "pareto_arc_easy_vs_size_gb_fp16.png",
        "choices_mlp_arc_easy.png",
        "hypervolume.png",
    ]
    # The top 40% (2 of 5): accuracies 0.4 (mlp 128) and 0.3 (mlp 64).
    assert data["architecture"]["tables"]["arc_easy: mlp"] == [
        {"top": "top 40%", "n": 2, "64": 0.5, "96": 0.0, "128": 0.5}
    ]
    # Without the study's choices, the dimensions come from the sub-networks themselves.
    inferred = dimensions({}, architecture_example())
    assert (
        inferred["num_layers"].choices == (3, 4) and inferred["mlp"].per_layer and inferred["mlp"].choices == (64, 128)
    )


def selection_example() -> RunData:
    rows = [(0.52, 9.5), (0.495, 7.0), (0.489, 5.0), (0.495, 7.0), (0.47, 5.9), (0.60, 10.5)]
    evals = [evaluation(n, {"arc_easy": a, "size_gb_fp16": s}, 4, (128,) * 4) for n, (a, s) in enumerate(rows)]
    return crafted(evals, [ACC, SIZE], {"arc_easy": 0.50, "size_gb_fp16": 10.0})


def picked(run: RunData, quality: Objective, cost: Objective, **kwargs) -> list[int | None]:
    return [s.evaluation.number if s.evaluation else None for s in select(run, quality, cost, **kwargs)]


def test_selection_tables_pick_the_right_trials():
    run = selection_example()
    # Same accuracy (>= 0.49): trials 0, 1, 3, 5; smallest 7.0 is a tie of 1 and 3 (same accuracy) -> 1.
    # <= 8 GB: 1, 2, 3, 4 -> best accuracy 0.495 (1 and 3 tie) -> 1. <= 6 GB: 2 and 4 -> 2. <= 4 GB: none.
    assert picked(run, ACC, SIZE, fractions=(0.8, 0.6, 0.4)) == [1, 1, 2, None]
    assert picked(run, ACC, SIZE, accuracy_tolerance=2.0, fractions=()) == [2]  # 0.489 >= 0.48 now
    assert picked(run, ACC, SIZE, accuracy_tolerance=0.0, fractions=()) == [0]
    # Throughput is a cost to maximise: "0.8" means at least reference / 0.8 tokens/s.
    evals = [
        evaluation(0, {"arc_easy": 0.50, "throughput_prefill": 120.0}, 4, (128,) * 4),
        evaluation(1, {"arc_easy": 0.45, "throughput_prefill": 200.0}, 3, (64,) * 3),
        evaluation(2, {"arc_easy": 0.40, "throughput_prefill": 90.0}, 3, (64,) * 3),
    ]
    fast = crafted(evals, [ACC, THROUGHPUT], {"arc_easy": 0.5, "throughput_prefill": 100.0})
    assert picked(fast, ACC, THROUGHPUT, fractions=(0.8,)) == [0, 1]
    # Perplexity: "same" means at most perplexity_tolerance above the reference.
    ppl = crafted(
        [
            evaluation(i, {"perplexity": p, "params": s}, 4, (128,) * 4)
            for i, (p, s) in enumerate([(10.4, 5), (10.6, 4), (9.0, 9)])
        ],
        [PPL, Objective("params", "minimize")],
        {"perplexity": 10.0, "params": 10},
    )
    assert picked(ppl, PPL, ppl.objectives[1], perplexity_tolerance=0.05, fractions=(0.5,)) == [0, 0]


def test_selection_table_rows(tmp_path):
    run = selection_example()
    doc, data = build_document(run, tmp_path, AnalysisOptions(size_fractions=(0.8, 0.4)))
    rows = data["selected"]["arc_easy vs size_gb_fp16"]
    assert [r["trial"] for r in rows] == ["-", 1, 1, "-"]
    assert rows[1]["arc_easy"] == pytest.approx(49.5) and rows[1]["ratio"] == pytest.approx(10 / 7)
    assert rows[1]["delta"] == pytest.approx(-0.5) and rows[3]["description"].startswith("none found")
    assert "hypervolume.png" in {p.name for p in doc.figures}


def test_quantized_results_are_read_leniently(tmp_path):
    path = tmp_path / "quantized.json"
    path.write_text(
        json.dumps(
            [
                {"trial": 3, "method": "int8", "values": {"arc_easy": "0.61"}, "footprint_bytes": 2e9},
                {"trial": "reference", "method": "nf4", "values": {"arc_easy": 0.7}, "footprint_gb": 1.5},
                {"trial": "three", "method": "int8", "values": {"arc_easy": 0.5}},
                {"trial": 4, "values": {"arc_easy": 0.5}},
                "not an entry",
            ]
        )
    )
    read = read_quantized(path)
    assert [(r.trial, r.method, r.values, r.footprint_bytes) for r in read.results] == [
        (3, "int8", {"arc_easy": 0.61}, 2_000_000_000),
        (None, "nf4", {"arc_easy": 0.7}, 1_500_000_000),
    ]
    assert read.methods == ["int8", "nf4"] and "3 entries" in read.notes[0]
    assert read.lookup(None, "nf4") is not None and read.lookup(3, "nf4") is None
    path.write_text(json.dumps({"int8": [{"trial": 1, "values": {"arc_easy": 0.5}}]}))
    assert read_quantized(path).results[0].method == "int8"
    path.write_text("{not json")
    broken = read_quantized(path)
    assert not broken.results and "could not be read" in broken.notes[0]
    assert not read_quantized(tmp_path / "missing.json").results


def test_bad_run_dirs_fail_with_one_clear_message(tmp_path, search_dir):
    with pytest.raises(NASError, match="does not exist"):
        analyze_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NASError, match="holds no study.db or summary.json"):
        analyze_run(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "study.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(NASError, match="Cannot read the study database"):
        analyze_run(corrupt)
    other = tmp_path / "other"
    shutil.copytree(search_dir, other, ignore=shutil.ignore_patterns("report"))
    summary = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps(summary | {"study_name": "renamed"}))
    with pytest.raises(NASError, match="'renamed' is not in the database"):
        analyze_run(other)
    (other / "study.db").unlink()
    with pytest.raises(NASError, match="no study.db"):
        analyze_run(other)
    with pytest.raises(NASError, match="size_fractions"):
        analyze_run(search_dir, tmp_path / "x", size_fractions=[1.5])
    with pytest.raises(NASError, match="Unknown analysis options"):
        analyze_run(search_dir, tmp_path / "x", tolerance=1)


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nas.analyze", f"run_dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Error: run_dir=" in result.stderr and "does not exist" in result.stderr and "nas.search" in result.stderr


def test_json_output_is_strict(search_dir, tmp_path):
    analyze_run(search_dir, tmp_path / "r")
    text = (tmp_path / "r" / "analysis.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    # Round 1 of LINAS has no prospective quality yet: NaN in the study, null in the JSON.
    assert data["progress"]["predictors"][0]["prospective_tau"] is None
    assert math.isfinite(data["reference"]["perplexity"])
