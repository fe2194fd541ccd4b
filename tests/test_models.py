"""Model loading: named configs, folders, and clear errors for bad names or folders."""

from __future__ import annotations

import pytest

from nas import load_model
from nas.errors import ModelLoadError, UnsupportedModelError
from nas.models import available_models


def test_available_models_lists_the_shipped_configs():
    assert {"tiny_llama", "smollm2_135m", "smollm2_135m_hub", "llama2_7b", "llama3_1_8b"} <= set(available_models())


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ModelLoadError, match=r"Unknown model 'gpt5'.*tiny_llama"):
        load_model("gpt5")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match=f"No model at {tmp_path / 'nowhere'}"):
        load_model(str(tmp_path / "nowhere"))


def test_corrupt_folder_is_named(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="corrupt or incomplete"):
        load_model(str(tmp_path))


def test_unsupported_architecture_is_refused_before_any_weight_is_read(tmp_path):
    from transformers import GPT2Config

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32)
    config.architectures = ["GPT2LMHeadModel"]
    config.save_pretrained(tmp_path)  # config.json only: loading weights would fail differently
    with pytest.raises(
        UnsupportedModelError,
        match="GPT2LMHeadModel is not supported; the elastic super-network handles LlamaForCausalLM, "
        "MistralForCausalLM, Qwen2ForCausalLM",
    ):
        load_model(str(tmp_path))


def test_saved_super_network_reloads_as_plain_llama(tiny, tmp_path):
    import json

    import torch

    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    reloaded, _ = load_model(str(tmp_path))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_device_and_dtype_from_config():
    model, _ = load_model("tiny_llama", dtype="bfloat16")
    assert next(model.parameters()).dtype.is_floating_point
    assert str(next(model.parameters()).dtype) == "torch.bfloat16"
    with pytest.raises(ModelLoadError, match="Unknown dtype 'float8'"):
        load_model("tiny_llama", dtype="float8")


@pytest.mark.slow
def test_embedded_smollm2_loads_with_its_real_shape(smollm2):
    model, tokenizer = smollm2
    shape = model.shape
    assert (shape.num_layers, shape.hidden_size, shape.intermediate_size) == (30, 576, 1536)
    assert (shape.num_heads, shape.num_kv_heads, shape.tie_word_embeddings) == (9, 3, True)
    assert model.num_parameters() == 134_515_008
    assert tokenizer("Hello").input_ids


CONVERT_ONCE = """
import os, shutil, sys, time
from pathlib import Path
from nas.models import gguf_cache
good, log, cache = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def convert(gguf_path, out_dir):  # a slow conversion, written atomically as the real one is
    with log.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(2)
    tmp = out_dir.with_name(f"{out_dir.name}.{os.getpid()}")
    shutil.copytree(good, tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)

gguf_cache.convert_gguf = convert
print("loaded", type(gguf_cache.gguf_package_model(cache_dir=cache)[0]).__name__)
"""


@pytest.mark.parametrize("cache", ["empty", "unreadable"])
def test_processes_loading_the_embedded_model_together_convert_it_once(tiny, tmp_path, cache):
    """Search workers or sweep jobs starting on a fresh machine (or over a damaged cached copy): one converts, the
    others wait for its copy (instead of each converting and replacing the folder another is loading)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "good")
    tokenizer.save_pretrained(tmp_path / "good")
    log, cache_dir = tmp_path / "conversions.log", tmp_path / "cache"
    if cache == "unreadable":
        damaged = cache_dir / "SmolLM2-135M-Instruct.Q4_1"
        shutil.copytree(tmp_path / "good", damaged)
        (damaged / "model.safetensors").write_bytes(b"a truncated copy")
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", CONVERT_ONCE, str(tmp_path / "good"), str(log), str(cache_dir)]
    processes = [
        subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert all("loaded" in out for out in outputs), outputs
    assert len(log.read_text().split()) == 1  # one conversion, three loads


@pytest.mark.slow
def test_embedded_model_is_converted_once_then_loaded_from_its_cache(tmp_path, monkeypatch):
    import shutil

    import torch

    from nas.models import gguf_cache

    convert = gguf_cache.convert_gguf
    converted: list = []

    def counted(gguf_path, out_dir):
        converted.append(out_dir)
        convert(gguf_path, out_dir)

    def refused(gguf_path, out_dir):
        raise AssertionError(f"converted {gguf_path.name} again although its cache is good")

    def restored(gguf_path, out_dir):
        # One real conversion is enough (about 40 s); the second only has to be asked for.
        converted.append(out_dir)
        shutil.rmtree(out_dir)
        shutil.copytree(tmp_path / "good", out_dir)

    cache_dir = tmp_path / "cache"
    cached = cache_dir / "SmolLM2-135M-Instruct.Q4_1"
    monkeypatch.setattr(gguf_cache, "convert_gguf", counted)
    first, _ = load_model("smollm2_135m", cache_dir=str(cache_dir))
    assert converted == [cached] and (cached / "model.safetensors").is_file()
    weight = "model.layers.0.mlp.down_proj.weight"
    # A copy: the loaded weights may be memory-mapped from the cache file overwritten below.
    expected = first.state_dict()[weight].clone()
    del first
    shutil.copytree(cached, tmp_path / "good")

    monkeypatch.setattr(gguf_cache, "convert_gguf", refused)
    second, _ = load_model("smollm2_135m", cache_dir=str(cache_dir))
    assert torch.equal(second.state_dict()[weight], expected)
    del second

    (cached / "model.safetensors").write_bytes(b"a truncated download")
    monkeypatch.setattr(gguf_cache, "convert_gguf", restored)
    third, _ = load_model("smollm2_135m", cache_dir=str(cache_dir))
    assert converted == [cached, cached]
    assert torch.equal(third.state_dict()[weight], expected)
