"""The overview job (`python -m nas.overview`) on tiny_llama with a small text: files, numbers, errors."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nas import SearchSpace, SubNetwork, load_model
from nas.errors import InvalidSubNetworkError, NASError
from nas.evaluation.perplexity import perplexity, tokenize
from nas.stages.overview import run_overview

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Sub-networks of one super-network share their weights, so scoring many of them is cheap. " * 12
MAX_TOKENS, SEQ_LEN = 512, 64


def compose_overview(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("overview", overrides=list(overrides))


def tiny_overrides(text_file: Path, *extra: str) -> list[str]:
    return [
        "model=tiny_llama",
        f"perplexity.text_file={text_file}",
        f"perplexity.max_tokens={MAX_TOKENS}",
        f"perplexity.seq_len={SEQ_LEN}",
        "perplexity.progress=false",
        "subnets.n_random=2",
        *extra,
    ]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, text_file):
    """One overview run on tiny_llama; returns (config, output folder, returned results)."""
    cfg = compose_overview(*tiny_overrides(text_file, "export.subnet=smallest"))
    out = tmp_path_factory.mktemp("run")
    return cfg, out, run_overview(cfg, out)


def test_writes_results_json_and_csv(run):
    _, out, results = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    names = [r["name"] for r in on_disk["rows"]]
    assert names == ["full", "largest", "smallest", "random:0", "random:1"]
    with (out / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["name"] for r in csv_rows] == names
    for row, json_row in zip(csv_rows, on_disk["rows"], strict=True):
        assert float(row["perplexity"]) == pytest.approx(json_row["perplexity"])
        assert SubNetwork.from_json(row["subnetwork"]) == SubNetwork.from_dict(json_row["subnetwork"])


def test_rows_are_consistent(run):
    cfg, _, results = run
    rows = {r["name"]: r for r in results["rows"]}
    # llama_nas's largest sub-network is the full model: same architecture, same numbers.
    assert rows["largest"]["subnetwork"] == rows["full"]["subnetwork"]
    for key in ("params", "size_gb_fp16", "gflops_per_token", "perplexity", "tokens"):
        assert rows["largest"][key] == rows["full"][key]
    smallest = SubNetwork.from_dict(rows["smallest"]["subnetwork"])
    assert smallest.num_layers == 3 and set(smallest.mlp_sizes) == {64}  # 0.75 of 4 layers, half of MLP 128
    assert rows["smallest"]["params"] < rows["random:0"]["params"] <= rows["full"]["params"]
    assert rows["smallest"]["gflops_per_token"] < rows["full"]["gflops_per_token"]
    assert rows["smallest"]["layers"] == 3
    for row in results["rows"]:
        assert row["tokens"] == MAX_TOKENS - MAX_TOKENS // SEQ_LEN
        assert row["perplexity"] == pytest.approx(math.exp(row["nll"]), rel=1e-12)
    assert results["search_space"] == cfg.search_space.name


def test_perplexities_match_an_independent_evaluation(run):
    _, _, results = run
    model, tokenizer = load_model("tiny_llama")  # same seed, same weights
    space = SearchSpace.from_config(OmegaConf.to_container(run[0].search_space), model.config)
    tokens = tokenize(tokenizer, TEXT)
    rows = {r["name"]: r for r in results["rows"]}
    for name, sub in (("smallest", space.smallest()), ("random:1", space.sample(1))):
        assert SubNetwork.from_dict(rows[name]["subnetwork"]) == sub
        with model.sub_network(sub):
            expected = perplexity(model, tokens, seq_len=SEQ_LEN, max_tokens=MAX_TOKENS, progress=False)
        assert rows[name]["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    assert rows["smallest"]["perplexity"] != pytest.approx(rows["full"]["perplexity"], rel=1e-3)


def test_exports_the_chosen_sub_network(run):
    _, out, results = run
    folder = Path(results["export"]["dir"])
    assert folder == out / "export"
    assert (folder / "config.json").is_file()
    assert results["export"]["subnetwork"] == results["rows"][2]["subnetwork"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (3, 64)  # the smallest: uniform
    record = json.loads((folder / "subnetwork.json").read_text())
    assert record["selected_as"] == "smallest"
    assert record["params"] == results["rows"][2]["params"]
    assert record["perplexity"]["value"] == results["rows"][2]["perplexity"]
    # The exported model scores the text exactly as the live sub-network did.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = tokenize(AutoTokenizer.from_pretrained(folder), TEXT)
    result = perplexity(exported, tokens, seq_len=SEQ_LEN, max_tokens=MAX_TOKENS, progress=False)
    assert result.perplexity == pytest.approx(results["rows"][2]["perplexity"], rel=1e-4)


def test_bad_subnet_spec_fails_before_loading_the_model(text_file, tmp_path, monkeypatch):
    def no_instantiate(*args, **kwargs):
        raise AssertionError("the model must not load when a sub-network name is wrong")

    monkeypatch.setattr("nas.stages.overview.instantiate", no_instantiate)
    cfg = compose_overview(*tiny_overrides(text_file, "export.subnet=biggest"))
    with pytest.raises(
        InvalidSubNetworkError, match=r"Unknown sub-network 'biggest'; use full, largest, smallest, random:<seed>"
    ):
        run_overview(cfg, tmp_path)
    cfg = compose_overview(*tiny_overrides(text_file, "subnets.names=[random:x]"))
    with pytest.raises(InvalidSubNetworkError, match="not an integer"):
        run_overview(cfg, tmp_path)
    cfg = compose_overview(*tiny_overrides(text_file, "subnets.names=[]", "subnets.n_random=0"))
    with pytest.raises(NASError, match="Nothing to score"):
        run_overview(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()


def run_main(*args: str, monkeypatch) -> None:
    """`python -m nas.overview ARGS`, in this process (a subprocess would spend ~10 s importing)."""
    from nas.overview import main

    monkeypatch.setattr(sys, "argv", ["nas.overview", *args])
    main()


def test_command_line_writes_under_the_run_dir(text_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_main(
        *tiny_overrides(text_file, "subnets.n_random=1", "export.subnet=null", f"hydra.run.dir={run_dir}"),
        monkeypatch=monkeypatch,
    )
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["full", "largest", "smallest", "random:0"]
    assert "perplexity" in (run_dir / "overview.log").read_text()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert not (run_dir / "export").exists()


def test_command_line_bad_input_is_one_clear_message(text_file, tmp_path, monkeypatch):
    args = tiny_overrides(text_file, "export.subnet=random:abc", f"hydra.run.dir={tmp_path}")
    with pytest.raises(SystemExit) as exit_info:
        run_main(*args, monkeypatch=monkeypatch)
    # SystemExit with a message: Python prints it alone to stderr and exits with status 1.
    assert (
        str(exit_info.value.code)
        == "Error: Sub-network 'random:abc': the seed 'abc' is not an integer; write e.g. random:3."
    )
