"""A training run killed with SIGKILL and resumed ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from nas import load_model

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "model=tiny_llama",
    "strategy=sandwich",
    "strategy.k=1",
    "sampler=grid_params",
    "data.limit=120",
    "data.batch_size=2",
    "data.max_length=192",
    "trainer.max_steps=24",
    "trainer.val_check_interval=1000",
    "checkpoint_every_n_steps=5",
    "optim.lr=1e-3",
    "optim.accumulate=2",
    "logger=none",
]


def train(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "nas.train", *COMMON, f"hydra.run.dir={run_dir}", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    finish(train(tmp_path / "straight"))

    runs = tmp_path / "runs"
    victim = train(runs / "killed")
    checkpoint = runs / "killed" / "checkpoints" / "step=10.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let it run on past the checkpoint, then kill it mid-step
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert not (runs / "killed" / "supernet").exists()

    finish(train(runs / "resumed", "ckpt_path=last"))
    resumed_from = json.loads((runs / "resumed" / "training.json").read_text())["resumed_from"]
    assert "killed/checkpoints/step=" in resumed_from  # it did continue the killed run

    straight = load_file(tmp_path / "straight" / "supernet" / "model.safetensors")
    resumed = load_file(runs / "resumed" / "supernet" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # Training changed the weights, so the equality above is not trivially true.
    fresh, _ = load_model("tiny_llama")
    assert not torch.equal(
        fresh.state_dict()["model.layers.0.mlp.up_proj.weight"], straight["model.layers.0.mlp.up_proj.weight"]
    )
