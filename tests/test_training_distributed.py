"""Training on several processes: batch arithmetic, model placement, and DDP / FSDP on CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import Mock

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.distributed.fsdp import FullyShardedDataParallel

from nas import SearchSpace
from nas.errors import NASError
from nas.instantiate import instantiate
from nas.stages.train import accumulation_steps, training_placement
from nas.training.module import SuperNetModule
from nas.training.samplers import UniformSampler
from nas.training.strategies import StandardStrategy

ROOT = Path(__file__).resolve().parents[1]


def test_global_batch_size_sets_the_accumulation_for_any_process_count():
    optim = OmegaConf.create({"accumulate": 1, "global_batch_size": 128})
    assert accumulation_steps(optim, batch_size=4, world_size=1) == 32
    assert accumulation_steps(optim, batch_size=4, world_size=8) == 4
    assert accumulation_steps(OmegaConf.create({"accumulate": 3, "global_batch_size": None}), 4, 8) == 3
    with pytest.raises(NASError, match=r"global_batch_size=128 is not a whole multiple of .* = 12"):
        accumulation_steps(optim, batch_size=4, world_size=3)


def test_mixed_precision_trains_fp32_master_weights_and_processes_load_on_cpu():
    assert training_placement(L.Trainer(accelerator="cpu", devices=1, logger=False)) == {}
    mixed = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", logger=False)
    assert training_placement(mixed) == {"dtype": "float32"}
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    assert training_placement(ddp) == {"device": "cpu"}


def run_two_processes(run: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nas.train", "model=tiny_llama", "data.limit=60", "data.val_size=8"]
    command += ["data.max_length=512", "logger=none", f"hydra.run.dir={run}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ddp_trains_sub_networks_that_drop_layers(tmp_path):
    """sandwich trains the smallest sub-network (fewest layers) every step: the dropped layers' weights
    get no gradient, which plain DDP refuses at the next backward."""
    run = tmp_path / "ddp"
    done = run_two_processes(
        run, "trainer=ddp", "trainer.max_steps=3", "strategy=sandwich", "strategy.k=1", "optim.global_batch_size=8"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "train_ddp_process_1.log").exists()  # a second process took part
    assert (done.stdout + done.stderr).count("Training ElasticLlamaForCausalLM with") == 1  # rank 0 alone prints
    summary = json.loads((run / "training.json").read_text())
    assert (summary["steps"], summary["processes"], summary["accumulate"], summary["global_batch_size"]) == (3, 2, 1, 8)
    weights = load_file(run / "supernet" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_fsdp_config_shards_each_decoder_layer_as_its_own_unit(tiny):
    """FSDP needs GPUs (Lightning refuses it on CPU): the config is checked here, the wrapping rule applied to the
    model's modules as FSDP applies it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=fsdp", "trainer.num_nodes=2"])
    assert (cfg.trainer.num_nodes, cfg.trainer.precision) == (2, "bf16-mixed")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    model, _ = tiny
    units = [name for name, module in model.named_modules() if policy(module, recurse=False, nonwrapped_numel=0)]
    assert units == [f"model.layers.{i}" for i in range(model.config.num_hidden_layers)]


def test_fsdp_clips_the_global_gradient_norm_through_its_root_module(tiny):
    """Under FSDP each rank holds a gradient shard: Lightning's clip_gradients refuses it, and
    torch.nn.utils.clip_grad_norm_ would clip by one shard's norm; the root module knows the global one."""
    model, _ = tiny
    space = SearchSpace.from_config(OmegaConf.load(ROOT / "conf/search_space/llama_nas.yaml"), model.config)
    module = SuperNetModule(model, StandardStrategy(), UniformSampler(space, seed=0), grad_clip=0.5)
    root = Mock(spec=FullyShardedDataParallel)
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(model=root))  # type: ignore[assignment]
    module.clip_gradients = Mock()  # type: ignore[method-assign]
    module._clip_gradients(optimizer=None)
    root.clip_grad_norm_.assert_called_once_with(0.5)
    module.clip_gradients.assert_not_called()

    module._trainer = SimpleNamespace(strategy=SimpleNamespace(model=module))  # type: ignore[assignment]
    module._clip_gradients(optimizer=None)  # one process or DDP: Lightning clips
    module.clip_gradients.assert_called_once_with(None, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
