"""Model loading: named configs (`conf/model/*.yaml`), hub ids and local folders, all made elastic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nas.errors import ModelLoadError
from nas.instantiate import instantiate
from nas.models.pretrained import from_pretrained

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"


def available_models() -> list[str]:
    """Names of the model configs shipped in `conf/model/`."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml"))


def load_model(name_or_path: str, **overrides: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The elastic super-network and its tokenizer.

    Args:
        name_or_path: a config name from `conf/model/` (e.g. "tiny_llama", "smollm2_135m"), a local
            folder, or a Hugging Face hub id ("org/name").
        overrides: config fields to change, e.g. `device="cuda", dtype="bfloat16"`.
    """
    config_file = MODEL_CONFIG_DIR / f"{name_or_path}.yaml"
    if config_file.is_file():
        cfg = OmegaConf.merge(OmegaConf.load(config_file), overrides)
        return instantiate(cfg)
    if "/" in name_or_path or Path(name_or_path).expanduser().exists():
        return from_pretrained(name_or_path, **overrides)
    raise ModelLoadError(
        f"Unknown model {name_or_path!r}: use one of {available_models()}, a local folder, or a Hugging Face id "
        "such as HuggingFaceTB/SmolLM2-135M."
    )


def build_model(cfg: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Instantiate a Hydra `model` config node."""
    return instantiate(cfg)
