"""`python -m nas.reorder` and its calibration sets: Hydra composition, the saved folder, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nas import SearchSpace, load_model
from nas.data.calibration import CalibrationError, CalibrationSet
from nas.errors import DataNotFoundError
from nas.instantiate import instantiate
from nas.models.tiny import byte_tokenizer
from nas.stages.reorder import IMPORTANCE_FILE, ReorderConfigError, run_reorder

PROJECT = Path(__file__).resolve().parents[1]
CONF_DIR = str(PROJECT / "conf")
TEXT = "Robert Boulter is an English film, television and theatre actor. He had a guest role in 2000.\n" * 40


def compose_reorder(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("reorder", overrides=overrides)


@pytest.fixture()
def text_file(tmp_path) -> Path:
    path = tmp_path / "calibration.txt"
    path.write_text(TEXT)
    return path


def test_reorder_command_saves_a_reusable_reordered_model(tmp_path, text_file):
    out = tmp_path / "reordered"
    cfg = compose_reorder(
        [
            "model=tiny_llama",
            f"calibration.text_file={text_file}",
            "calibration.num_samples=6",
            "calibration.seq_len=48",
            "calibration.batch_size=4",
            f"out_dir={out}",
            "progress=false",
        ]
    )
    assert run_reorder(cfg, tmp_path) == out
    record = json.loads((out / IMPORTANCE_FILE).read_text())
    assert record["scores"]["num_tokens"] == 6 * 48
    assert record["calibration"]["file"] == str(text_file)
    for layer_scores in record["scores"]["mlp"]:
        assert layer_scores == sorted(layer_scores, reverse=True)
    assert sorted(record["source_indices"]["hidden"]) == list(range(64))

    # The folder loads through the model config group, keeps its layer order and computes what the
    # original model computed (the permutation does not change the function).
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        model_cfg = compose("reorder", overrides=["model=pretrained", f"model.name_or_path={out}", "model.device=cpu"])
    reloaded, _ = instantiate(model_cfg.model)
    original, _ = load_model("tiny_llama")
    assert reloaded.config.nas_layer_order == record["layer_order"]
    assert sorted(record["layer_order"]) == [0, 1, 2, 3]
    space = SearchSpace.from_config({"num_layers": {"choices": [0.5, 1.0]}}, reloaded.config)
    assert space.layer_order == tuple(record["layer_order"])
    ids = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, original(ids).logits, atol=1e-5, rtol=0)
    assert not torch.equal(reloaded.model.embed_tokens.weight, original.model.embed_tokens.weight)


def test_dimensions_can_be_left_in_place(tmp_path, text_file):
    cfg = compose_reorder(
        [
            "model=tiny_llama",
            f"calibration.text_file={text_file}",
            "calibration.num_samples=2",
            "calibration.seq_len=32",
            f"out_dir={tmp_path / 'out'}",
            "dimensions.hidden=false",
            "dimensions.layers=false",
            "progress=false",
        ]
    )
    folder = run_reorder(cfg, tmp_path)
    record = json.loads((folder / IMPORTANCE_FILE).read_text())
    assert record["source_indices"]["hidden"] == list(range(64))
    assert record["layer_order"] is None
    assert "nas_layer_order" not in json.loads((folder / "config.json").read_text())
    with pytest.raises(ReorderConfigError, match="dimensions"):
        run_reorder(
            compose_reorder(["model=tiny_llama", f"calibration.text_file={text_file}", "+dimensions.depth=true"]),
            tmp_path,
        )


def test_missing_text_file_fails_with_one_message(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.reorder",
            "model=tiny_llama",
            f"calibration.text_file={tmp_path / 'nope.txt'}",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    assert result.returncode == 1
    assert f"calibration.text_file={tmp_path / 'nope.txt'}: no such file." in result.stderr
    assert "Traceback" not in result.stderr


def test_calibration_windows_are_seeded_and_checked(tmp_path, text_file):
    tokenizer = byte_tokenizer()
    windows = CalibrationSet(text_file=str(text_file), num_samples=5, seq_len=40, seed=1).token_windows(tokenizer)
    assert windows.shape == (5, 40)
    again = CalibrationSet(text_file=str(text_file), num_samples=5, seq_len=40, seed=1).token_windows(tokenizer)
    other = CalibrationSet(text_file=str(text_file), num_samples=5, seq_len=40, seed=2).token_windows(tokenizer)
    assert torch.equal(windows, again) and not torch.equal(windows, other)
    batches = CalibrationSet(text_file=str(text_file), num_samples=5, seq_len=40, batch_size=2).batches(tokenizer)
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    with pytest.raises(CalibrationError, match="lower one of them"):
        CalibrationSet(text_file=str(text_file), num_samples=1000, seq_len=40).token_windows(tokenizer)
    with pytest.raises(CalibrationError, match="calibration.seq_len=0"):
        CalibrationSet(text_file=str(text_file), seq_len=0)
    with pytest.raises(DataNotFoundError, match="no such file"):
        CalibrationSet(text_file=str(tmp_path / "missing.txt"))


def test_jsonl_documents_are_separated_by_eos_and_checked(tmp_path):
    tokenizer = byte_tokenizer()
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "ab"}) + "\n\n" + json.dumps({"text": "cde"}) + "\n")
    windows = CalibrationSet(text_file=str(path), num_samples=1, seq_len=7).token_windows(tokenizer)
    assert windows[0].tolist() == tokenizer("ab</s>cde</s>", add_special_tokens=False)["input_ids"]
    path.write_text(json.dumps({"content": "ab"}) + "\n")
    with pytest.raises(CalibrationError, match="calibration.text_field"):
        CalibrationSet(text_file=str(path)).documents()


@pytest.mark.parametrize("name", ["c4", "wikitext2"])
def test_shipped_calibration_configs_find_their_data(name):
    cfg = compose_reorder([f"calibration={name}", "calibration.num_samples=3", "calibration.seq_len=16"])
    calibration = instantiate(cfg.calibration)
    assert calibration.path.is_file() and calibration.name == name
    if name == "c4":  # WikiText-2 is one 1.3 MB document: tokenizing it is left to the slow runs
        assert calibration.token_windows(byte_tokenizer()).shape == (3, 16)
