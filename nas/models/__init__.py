"""Model loading: named configs (`conf/model/*.yaml`), hub ids and local folders, all made elastic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nas.errors import ModelLoadError
from nas.instantiate import instantiate
from nas.io.locations import config_dir


def _model_configs() -> Path:
    return config_dir() / "model"


def available_models() -> list[str]:
    """Names of the model configs shipped in `conf/model/`."""
    return sorted(p.stem for p in _model_configs().glob("*.yaml"))


def model_config(name_or_path: str, **overrides: Any) -> DictConfig:
    """The `model` config node for a name in `conf/model/` ("tiny_llama", "smollm2_135m") or, through the
    `pretrained` config, for a local folder or a hub id; `overrides` change its fields.

    This is the one description of a model to load, used by `load_model`, every entry point (`model=...`)
    and the pipeline (which hands a trained super-network's folder to the later stages).
    """
    config_file = _model_configs() / f"{name_or_path}.yaml"
    if config_file.is_file():
        base = OmegaConf.load(config_file)
    elif "/" in name_or_path or Path(name_or_path).expanduser().exists():
        base = OmegaConf.load(_model_configs() / "pretrained.yaml")
        base.name_or_path = name_or_path
    else:
        raise ModelLoadError(
            f"Unknown model {name_or_path!r}: use one of {available_models()}, a local folder, or a Hugging Face id "
            "such as HuggingFaceTB/SmolLM2-135M."
        )
    return cast(DictConfig, OmegaConf.merge(base, overrides))


def load_model(name_or_path: str, **overrides: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The elastic super-network and its tokenizer.

    Args:
        name_or_path: a config name from `conf/model/` (e.g. "tiny_llama", "smollm2_135m"), a local
            folder, or a Hugging Face hub id ("org/name").
        overrides: config fields to change, e.g. `device="cuda", dtype="bfloat16"`.
    """
    return cast(tuple[PreTrainedModel, PreTrainedTokenizerBase], instantiate(model_config(name_or_path, **overrides)))
