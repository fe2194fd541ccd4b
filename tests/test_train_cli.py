"""`python -m nas.train` through Hydra: the paper's experiment shrunk to a tiny model, NaN stops, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nas.data.instructions import DataFormatError
from nas.errors import DataNotFoundError, NASError
from nas.stages.train import run_training
from nas.training.module import NonFiniteLossError

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
TINY = [
    "model=tiny_llama",
    "data.limit=60",
    "data.batch_size=2",
    "data.max_length=192",
    "data.source=local",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32-true",
    "trainer.strategy=auto",
    "logger=csv",
]


def compose_train(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"logger.save_dir={tmp_path}"], return_hydra_config=False)


def test_llama_nas_experiment_runs_on_a_tiny_model(tmp_path):
    cfg = compose_train(
        [
            "experiments=llama_nas_finetune",
            *TINY,
            "trainer.max_steps=4",  # stops the experiment's 6 epochs after 4 steps
            "optim.global_batch_size=4",  # the paper's 128, shrunk: 2 per batch x 1 process x 2 accumulated
            "trainer.val_check_interval=4",
            "trainer.limit_val_batches=1",
        ],
        tmp_path,
    )
    assert cfg.strategy._target_.endswith("AlternatingStrategy") and cfg.optim.lr == 1e-5
    summary = run_training(cfg, tmp_path)
    assert summary["steps"] == 4
    assert (summary["accumulate"], summary["global_batch_size"], summary["processes"]) == (2, 4, 1)
    assert {"train/loss/full", "val/loss_largest", "val/loss_smallest"} <= set(summary["metrics"])
    assert json.loads((tmp_path / "supernet" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert not (tmp_path / "reordered").exists()  # reorder=false and the uniform sampler: no reorder step
    metrics = next(tmp_path.glob("logs/**/metrics.csv")).read_text()
    assert "train/loss/sub" in metrics and "train/tokens_per_s" in metrics


def test_epochs_set_the_number_of_steps(tmp_path):
    cfg = compose_train(
        [
            *TINY,
            "epochs=0.5",
            "optim.accumulate=2",
            "data.val_size=10",
            "checkpoint_every_n_steps=100",
            "save_supernet=false",
            "data.max_length=4096",
        ],
        tmp_path,
    )  # long enough to drop no example
    # 60 records - 10 held out = 50 -> 25 micro-batches per epoch -> half an epoch is 7 optimizer steps of 2.
    assert run_training(cfg, tmp_path)["steps"] == 7
    cfg.trainer.max_steps = 3  # whichever ends first, as in Lightning
    assert run_training(cfg, tmp_path / "capped")["steps"] == 3


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    cfg = compose_train([*TINY, "trainer.max_steps=6", "checkpoint_every_n_steps=2", "strategy=standard"], tmp_path)
    from nas.training import strategies

    real = strategies.lm_loss
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        return real(logits, labels) * (float("nan") if calls["n"] == 4 else 1.0)

    monkeypatch.setattr(strategies, "lm_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss of the full network is nan at optimizer step 3"):
        run_training(cfg, tmp_path)
    assert (tmp_path / "checkpoints" / "step=2.ckpt").exists()
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.k=-1", "strategy.k=-1"),
        ("data.path=/nonexistent/alpaca.json", "/nonexistent/alpaca.json"),
        ("ckpt_path=last", "no checkpoints/last.ckpt"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, override, message):
    strategy = ["strategy=sandwich"] if override.startswith("strategy") else []
    cfg = compose_train([*TINY, *strategy, override], tmp_path / "run")
    with pytest.raises(NASError, match=message):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["sampler=importance_grid_params", "sampler.num_bins=3"],  # the sampler requires reordering
        ["reorder=true"],  # the reorder step, with the default uniform sampler
    ],
)
def test_reorder_step_trains_the_reordered_model(tmp_path, overrides):
    cfg = compose_train(
        [
            *TINY,
            *overrides,
            "strategy=sandwich",
            "strategy.k=1",
            "trainer.max_steps=2",
            "calibration.num_samples=4",
            "calibration.seq_len=64",
        ],
        tmp_path,
    )
    run_training(cfg, tmp_path)
    order = json.loads((tmp_path / "supernet" / "config.json").read_text())["nas_layer_order"]
    assert sorted(order) == [0, 1, 2, 3]
    # The reordered model is saved in the run folder before training and loads again (reusable).
    record = json.loads((tmp_path / "reordered" / "importance.json").read_text())
    assert record["layer_order"] == order and record["scores"]["layers"]
    assert record["calibration"]["name"] == "c4"
    from nas.models.pretrained import from_pretrained

    reordered, _ = from_pretrained(str(tmp_path / "reordered"), device="cpu")
    assert reordered.config.nas_layer_order == order


def test_reorder_is_off_by_default():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        assert compose("train").reorder is False


@pytest.mark.parametrize("group", ["strategy", "sampler"])
def test_unknown_strategy_or_sampler_lists_the_available_ones(group):
    from hydra.errors import MissingConfigException

    available = sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
    assert len(available) >= 4
    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(MissingConfigException, match=f"Could not find '{group}/nope'") as error,
    ):
        compose("train", overrides=[f"{group}=nope"])
    assert all(name in str(error.value) for name in available)


# TINY with the default data.source (auto: a local file when found, else the hub).
TINY_AUTO = [o for o in TINY if not o.startswith("data.source=")]


@pytest.fixture()
def no_hub(monkeypatch):
    """Fail loudly instead of reaching the hub (the machine may be offline)."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"fell back to the hub: load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


def test_missing_explicit_data_file_fails_at_start_up_with_source_auto(tmp_path, no_hub):
    missing = tmp_path / "no_such_alpaca.json"
    cfg = compose_train([*TINY_AUTO, f"data.path={missing}"], tmp_path / "run")
    assert cfg.data.source == "auto"
    with pytest.raises(DataNotFoundError, match=re.escape(f"data.path={missing}: no such file")):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("field", ["instruction", "output"])
def test_data_file_without_a_field_fails_at_start_up(tmp_path, no_hub, field):
    records = [{"instruction": f"Say {i}.", "output": str(i)} for i in range(40)]
    del records[7][field]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(records))
    cfg = compose_train([*TINY_AUTO, f"data.path={data}"], tmp_path / "run")
    with pytest.raises(DataFormatError, match=rf"alpaca.json, record 7: missing \['{field}'\]"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("strategy", ["random", "standard"])
def test_distill_without_a_teacher_fails_at_start_up(tmp_path, strategy):
    cfg = compose_train([*TINY, f"strategy={strategy}", "strategy.distill=true"], tmp_path / "run")
    with pytest.raises(NASError, match="distill is supported by sandwich and alternating"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_in_the_distillation_loss_stops_the_run(tmp_path, monkeypatch):
    cfg = compose_train(
        [*TINY, "trainer.max_steps=4", "checkpoint_every_n_steps=1", "strategy=alternating", "strategy.distill=true"],
        tmp_path,
    )
    from nas.training import strategies

    real = strategies.distill_loss

    def poisoned(student, teacher, labels):  # only the KL trained on, not the reported cross-entropy
        return real(student, teacher, labels) * float("nan")

    monkeypatch.setattr(strategies, "distill_loss", poisoned)
    # Step 0 trains the full network, step 1 the first sub-network, with the KL to the full network.
    with pytest.raises(NonFiniteLossError, match=r"loss of sub-network .* is nan at optimizer step 1;"):
        run_training(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 1


def test_wandb_logs_offline(tmp_path, monkeypatch):
    # Offline must come from the config's default (the one W&B switch, wandb.mode), not from the environment.
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY[:-1],
                "logger=wandb",
                f"logger.save_dir={tmp_path}",
                "trainer.max_steps=2",
                "save_supernet=false",
            ],
        )
    assert cfg.logger.mode == "offline"
    run_training(cfg, tmp_path)
    import wandb

    wandb.finish()
    runs = list(tmp_path.glob("**/offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_lora_run_saves_merged_plain_weights(tmp_path):
    cfg = compose_train(
        [*TINY, "finetune=lora", "optim.lr=1e-2", "trainer.max_steps=2", "strategy=sandwich", "strategy.k=1"], tmp_path
    )
    run_training(cfg, tmp_path)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "supernet" / "model.safetensors")
    assert not any("lora" in name for name in saved)  # adapters merged into plain weights
    from nas import load_model

    fresh, _ = load_model("tiny_llama")
    assert not torch.equal(
        saved["model.layers.0.mlp.up_proj.weight"], fresh.state_dict()["model.layers.0.mlp.up_proj.weight"]
    )
    assert torch.equal(saved["model.embed_tokens.weight"], fresh.state_dict()["model.embed_tokens.weight"])  # frozen
