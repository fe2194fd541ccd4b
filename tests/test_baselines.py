"""Pruning baselines checked against their definitions: SliceGPT's computational invariance, exact N:M masks,
SparseGPT <= Wanda <= magnitude in layer reconstruction error, ratio 0 changes nothing, every saved baseline
reloads in plain transformers with the same logits, bad input fails before calibration, and the job resumes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_export import load_in_clean_process
from test_search_job import TEXT

from nas import load_model
from nas.baselines.base import BaselineError
from nas.baselines.saving import save_pruned
from nas.baselines.semi_structured import Magnitude, SparseGpt, Wanda, magnitude_prune_, sparsegpt_prune_, wanda_prune_
from nas.baselines.slicegpt import SliceGpt, slice_model
from nas.baselines.structured import LayerDrop, LlmPruner, WidthCut
from nas.stages.baselines import run_baselines

CONF = str(Path(__file__).resolve().parents[1] / "conf")
METHODS = [LlmPruner(), SliceGpt(), Magnitude(), Wanda(), SparseGpt(), LayerDrop(), WidthCut()]
RATIOS = {"llm_pruner": 0.5, "slicegpt": 0.25, "layer_drop": 0.25, "width_cut": 0.5}


@pytest.fixture(scope="module")
def calibration():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (2, 48), generator=generator) for _ in range(3)]


@pytest.fixture()
def fresh():
    """A tiny model of its own (baselines change weights), 8 layers so LLM-Pruner's block range is not empty."""
    return load_model("tiny_llama", num_layers=8)


def logits(model, ids, sub=None):
    with torch.no_grad():
        if sub is None:
            return model(ids).logits
        with model.sub_network(sub):
            return model(ids).logits


IDS = torch.tensor([[5, 17, 99, 3, 250, 42, 7, 7, 1, 64]])


def test_slicegpt_rotation_without_slicing_keeps_the_logits(fresh, calibration):
    model, _ = fresh
    rotated = slice_model(model, calibration, 0.0)
    assert rotated.config.hidden_size == model.config.hidden_size and not rotated.config.tie_word_embeddings
    assert not torch.allclose(rotated.model.embed_tokens.weight, model.model.embed_tokens.weight)  # it did rotate
    torch.testing.assert_close(logits(rotated, IDS), logits(model, IDS), atol=1e-4, rtol=0)


def test_slicegpt_slices_every_residual_width(fresh, calibration):
    model, _ = fresh
    sliced = slice_model(model, calibration, 0.25)
    width = sliced.config.hidden_size
    assert (
        width == 48 and sliced.lm_head.weight.shape[1] == 48 and sliced.model.layers[3].attn_shortcut.shape == (48, 48)
    )
    assert torch.isfinite(logits(sliced, IDS)).all()


def test_slicegpt_width_is_a_whole_number_of_heads(calibration):
    """SmolLM2's 576 = 9 heads x 64 at ratio 0.2 gave 464, which Llama's config refuses: the width is rounded
    to a multiple of the heads (here 72 = 9 x 8 -> 54, not 56)."""
    model, _ = load_model("tiny_llama", hidden_size=72, num_heads=9, num_kv_heads=3)
    sliced = slice_model(model, calibration, 0.2)
    assert sliced.config.hidden_size == 54 and sliced.config.head_dim == 8
    assert torch.isfinite(logits(sliced, IDS)).all()
    with pytest.raises(BaselineError, match="leaves no width"):
        SliceGpt().check(0.95, model.shape)


@pytest.mark.parametrize("method", [Magnitude(), Wanda(), SparseGpt()], ids=lambda m: m.name)
def test_every_2_4_mask_has_two_zeros_in_each_group_of_four(fresh, calibration, method):
    model, tokenizer = fresh
    pruned = method.prune(model, tokenizer, calibration, 0.5)
    for layer in model.model.layers:
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj"):
            weight = layer.get_submodule(name).weight
            zeros = (weight == 0).reshape(weight.shape[0], -1, 4).sum(-1)
            assert (zeros == 2).all(), name
    assert pruned.details["pattern"] == "2:4" and pruned.details["measured_sparsity"] == pytest.approx(0.5)
    assert pruned.compressed_bytes["fp16"] < pruned.size_bytes["fp16"]


def test_reconstruction_error_orders_sparsegpt_wanda_magnitude():
    """On one layer, with the same calibration inputs (a few outlier features, as in LLMs): the output error
    of SparseGPT <= Wanda <= magnitude (Wanda weighs by the input norms, SparseGPT also compensates)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(32, 64, generator=generator)
    scale = torch.ones(64)
    scale[torch.randperm(64, generator=generator)[:6]] = 20.0
    inputs = torch.randn(512, 64, generator=generator) * scale
    errors = {}
    for name in ("magnitude", "wanda", "sparsegpt"):
        layer = torch.nn.Linear(64, 32, bias=False)
        layer.weight.data = weight.clone()
        if name == "magnitude":
            magnitude_prune_(layer, 2)
        elif name == "wanda":
            wanda_prune_(layer, (inputs**2).sum(0), 2)
        else:
            sparsegpt_prune_(layer, inputs.double().T @ inputs.double(), 2)
        errors[name] = float(((inputs @ layer.weight.T - inputs @ weight.T) ** 2).sum())
    assert errors["sparsegpt"] <= errors["wanda"] <= errors["magnitude"], errors


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_ratio_zero_returns_the_original_model(calibration, method):
    model, tokenizer = load_model("tiny_llama", num_layers=8)
    original = logits(model, IDS)
    pruned = method.prune(copy.deepcopy(model), tokenizer, calibration, 0.0)
    tolerance = 1e-4 if method.name == "slicegpt" else 0.0  # a rotation, exact up to rounding
    torch.testing.assert_close(logits(pruned.model, IDS, pruned.sub), original, atol=tolerance, rtol=0)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_a_saved_baseline_reloads_in_plain_transformers_with_the_same_logits(calibration, method, tmp_path):
    model, tokenizer = load_model("tiny_llama", num_layers=8)
    ratio = RATIOS.get(method.name, 0.5)
    pruned = method.prune(model, tokenizer, calibration, ratio)
    expected = logits(pruned.model, IDS, pruned.sub)
    folder = save_pruned(pruned, tokenizer, tmp_path / "model")
    loaded = load_in_clean_process(folder, IDS, tmp_path)
    torch.testing.assert_close(loaded["logits"], expected, atol=1e-5, rtol=1e-5)
    stored = sum(p.numel() for p in pruned.model.parameters()) if pruned.sub is None else pruned.params
    if method.name not in ("magnitude_2_4", "wanda_2_4", "sparsegpt_2_4"):
        assert loaded["params"] == stored  # what is stored is what was counted (N:M stores its zeros)


def compose_baselines(tmp_path: Path, *overrides: str):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "baselines",
            overrides=[
                "model=tiny_llama",
                "objective=perplexity_vs_params",
                f"perplexity.text_file={text}",
                "perplexity.max_tokens=1024",
                "perplexity.seq_len=128",
                "calibration.num_samples=4",
                "calibration.seq_len=64",
                "progress=false",
                *overrides,
            ],
        )


def refuse_calibration(monkeypatch) -> None:
    def no_calibration(*args, **kwargs):
        raise AssertionError("calibration ran before the settings were checked")

    monkeypatch.setattr("nas.data.calibration.CalibrationSet.batches", no_calibration)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["baseline=slicegpt", "ratio=[1.0]"], r"slicegpt: ratio=1.0 is outside \[0, 1\)"),
        (["baseline=wanda_2_4", "ratio=[0.3]"], r"wanda_2_4: ratio=0.3: 4-wide semi-structured .* one of 0, 0.25, 0.5"),
        (["baseline=layer_drop", "ratio=[0.9]"], r"layer_drop: ratio=0.9 removes all 4 layers"),
        (["baseline=width_cut", "ratio=[-0.1]"], r"outside \[0, 1\)"),
        (["baseline=llm_pruner", "recovery.method=qlora"], r"recovery.method='qlora': use lora"),
    ],
    ids=["ratio-one", "not-n-of-4", "no-layer-left", "negative", "unknown-recovery"],
)
def test_bad_input_fails_before_any_calibration(tmp_path, monkeypatch, overrides, message):
    refuse_calibration(monkeypatch)
    with pytest.raises(BaselineError, match=message):
        run_baselines(compose_baselines(tmp_path, *overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "baselines.json").exists()


def test_an_unknown_method_lists_the_available_ones(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "nas.baselines", "baseline=[magnitude_4_8,slicegpt]"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "unknown baseline option(s) ['magnitude_4_8']; available: layer_drop, llm_pruner" in proc.stderr


def test_the_job_scores_saves_and_reuses_each_baseline(tmp_path, monkeypatch):
    cfg = compose_baselines(tmp_path, "baseline=[layer_drop,magnitude_2_4]", "ratio=[0.25]")
    summary = run_baselines(cfg, tmp_path / "run")
    entries = {e["method"]: e for e in summary["baselines"]}
    assert set(entries) == {"layer_drop", "magnitude_2_4"}
    full = summary["reference"]["values"]
    assert entries["layer_drop"]["values"]["params"] < full["params"]  # one layer of four dropped
    assert entries["magnitude_2_4"]["values"]["params"] < full["params"]  # non-zero weights
    assert entries["layer_drop"]["values"]["perplexity"] > 0 and Path(entries["layer_drop"]["folder"]).is_dir()
    # A re-run prunes nothing again: every entry is reused by its key.
    monkeypatch.setattr("nas.baselines.structured.LayerDrop.prune", lambda *a, **k: pytest.fail("pruned again"))
    monkeypatch.setattr("nas.baselines.semi_structured.Magnitude.prune", lambda *a, **k: pytest.fail("pruned again"))
    again = run_baselines(cfg, tmp_path / "run")
    assert [e["values"] for e in again["baselines"]] == [e["values"] for e in summary["baselines"]]


def test_the_report_puts_baselines_beside_the_front(tmp_path):
    from test_search_job import base_overrides, compose_search

    from nas.analysis.report import analyze_run
    from nas.stages.search import run_search

    run_dir = tmp_path / "run"
    run_search(compose_search([*base_overrides(tmp_path), "search=random", "search.n_trials=6"]), run_dir)
    run_baselines(
        compose_baselines(tmp_path, "baseline=[layer_drop,magnitude_2_4]", "ratio=[0.25]"), run_dir / "baselines"
    )
    analysis = analyze_run(run_dir)
    rows = analysis["baselines"]["perplexity vs params"]
    assert [r["baseline"] for r in rows] == ["layer_drop 0.25", "magnitude_2_4 0.25"]
    assert all(r["trial"] == "-" or r["sub_cost"] <= r["params"] for r in rows)  # never a larger sub-network
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Pruning baselines" in report and "sub-network - baseline" in report


def test_recovery_fine_tune_adds_a_recovered_entry(tmp_path):
    from safetensors.torch import load_file

    cfg = compose_baselines(
        tmp_path,
        "baseline=[llm_pruner]",
        "ratio=[0.5]",
        "recovery.method=lora",
        "recovery.steps=3",
        "data.limit=40",
        "data.batch_size=2",
        "data.max_length=192",
        "data.val_size=4",
    )
    summary = run_baselines(cfg, tmp_path / "run")
    pruned, recovered = summary["baselines"]
    assert (pruned["method"], recovered["method"]) == ("llm_pruner", "llm_pruner+lora")
    assert recovered["recovery"]["steps"] == 3 and recovered["params"] == pruned["params"]  # same shape, merged
    before = load_file(Path(pruned["folder"]) / "model.safetensors")
    after = load_file(Path(recovered["folder"]) / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the fine-tune changed weights
