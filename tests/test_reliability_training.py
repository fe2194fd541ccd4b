"""Training resumes only its own run: `ckpt_path=last` picks the newest checkpoint of a run with the same
settings and refuses one written with other settings, naming them; malformed records are refused."""

from __future__ import annotations

import json

import pytest
from test_train_cli import TINY, compose_train

from nas.data.instructions import DataFormatError
from nas.errors import NASError
from nas.stages.train import run_training

SHORT = [*TINY, "trainer.max_steps=2", "checkpoint_every_n_steps=1", "trainer.val_check_interval=1000"]


def train(tmp_path, folder: str, *overrides: str) -> dict:
    return run_training(compose_train([*SHORT, *overrides], tmp_path), tmp_path / "runs" / folder)


def test_last_resumes_only_a_run_with_the_same_settings(tmp_path):
    train(tmp_path, "a", "optim.lr=1e-3", "strategy=alternating")
    with pytest.raises(NASError, match=r"other settings \(optim\.lr: 0\.001 -> 0\.0005.*strategy\._target_"):
        train(tmp_path, "b", "optim.lr=5e-4", "strategy=sandwich", "ckpt_path=last", "trainer.max_steps=3")
    assert not (tmp_path / "runs" / "b" / "checkpoints" / "last.ckpt").exists()  # refused before training

    train(tmp_path, "c", "optim.lr=5e-4", "strategy=sandwich")  # now the newest checkpoint is another run's
    resumed = train(tmp_path, "d", "optim.lr=1e-3", "strategy=alternating", "ckpt_path=last", "trainer.max_steps=3")
    assert "/runs/a/checkpoints/" in resumed["resumed_from"] and resumed["steps"] == 3


def test_an_explicit_checkpoint_of_another_run_is_refused(tmp_path):
    train(tmp_path, "a", "data.batch_size=2")
    checkpoint = next((tmp_path / "runs" / "a" / "checkpoints").glob("step=*.ckpt"))
    with pytest.raises(NASError, match=r"data\.batch_size: 2 -> 1"):
        train(tmp_path, "b", "data.batch_size=1", f"ckpt_path='{checkpoint}'")


def test_a_longer_run_may_resume_a_shorter_one(tmp_path):
    train(tmp_path, "a")
    record = json.loads((tmp_path / "runs" / "a" / "run.json").read_text())
    assert record["settings"]["optim"]["lr"] and "max_steps" not in record["settings"]["trainer"]
    summary = train(tmp_path, "b", "trainer.max_steps=4", "ckpt_path=last")
    assert summary["steps"] == 4 and "/runs/a/" in summary["resumed_from"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"instruction": "Say hi.", "input": "", "output": None}, r"output=None; instruction and output must be text"),
        ({"instruction": 3, "output": "three"}, r"instruction=3"),
        ({"instruction": "Add.", "input": ["1", "2"], "output": "3"}, r"input=\['1', '2'\]"),
    ],
    ids=["null-output", "numeric-instruction", "list-input"],
)
def test_records_that_are_not_text_are_refused_before_training(tmp_path, record, message):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": "Hi", "input": "", "output": "Hello"}, record]))
    with pytest.raises(DataFormatError, match=rf"record 1: {message}"):
        run_training(compose_train([*SHORT, f"data.path={data}"], tmp_path), tmp_path / "run")
