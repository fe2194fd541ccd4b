"""`python -m nas.export`: Hydra composition, the written folder, and one clear error for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas import SubNetwork
from nas.errors import InvalidSubNetworkError
from nas.stages.export import run_export

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def test_export_command_writes_the_selected_sub_network(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "export",
            overrides=[
                "model=tiny_llama",
                "search_space=klein",
                "subnet=smallest",
                f"out_dir={tmp_path / 'out'}",
                "dtype=bfloat16",
            ],
        )
    folder = run_export(cfg, tmp_path)
    record = json.loads((folder / "subnetwork.json").read_text())
    assert record["selected_as"] == "smallest"
    sub = SubNetwork.from_dict(record["sub_network"])
    assert sub.num_layers == 2 and sub.hidden_size == 32  # klein's smallest on the 4-layer, 64-wide model
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2


def test_bad_subnet_fails_with_one_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nas.export", "model=tiny_llama", "subnet=biggest", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 1
    assert "Unknown sub-network 'biggest'; use full, largest, smallest, random:<seed>" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"layers": [0, 1], "mlp_sizes": [64', "is not valid JSON"),
        ('{"layers": [0], "mlp_sizes": [64], "num_heads": [2]}', r"missing \['hidden_size'\]"),
        ('{"layers": ["a"], "mlp_sizes": [64], "num_heads": [2], "hidden_size": 64}', "lists of integers"),
        ("[0, 1]", "got a list"),
    ],
    ids=["not-json", "missing-field", "not-integers", "not-a-mapping"],
)
def test_corrupt_subnet_file_fails_before_the_model_loads(tmp_path, monkeypatch, text, message):
    path = tmp_path / "arch.json"
    path.write_text(text)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the sub-network file was checked")

    monkeypatch.setattr("nas.stages.export.instantiate", no_model)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("export", overrides=["model=tiny_llama", f"subnet={path}", f"out_dir={tmp_path / 'out'}"])
    with pytest.raises(InvalidSubNetworkError, match=message) as error:
        run_export(cfg, tmp_path)
    assert str(path) in str(error.value)
    assert not (tmp_path / "out").exists()
