"""Export a sub-network as a standalone Hugging Face model folder.

Uniform sub-networks (one MLP width and head count for all kept layers) are saved as the model's own
architecture. Heterogeneous ones are saved as `NasLlamaForCausalLM` (`NasMistralForCausalLM`,
`NasQwen2ForCausalLM`), whose two small source files are written into the folder (`auto_map`), so `AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)` loads them without this project installed.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import (
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from nas.errors import UnsupportedModelError
from nas.export.remote_code.configuration_nas_llama import NasLlamaConfig, NasMistralConfig, NasQwen2Config
from nas.io.atomic import write_json
from nas.io.folders import check_output_folder, publish_folder
from nas.supernet.elastic_model import ELASTIC_CLASSES, shape_of
from nas.supernet.slicing import layer_slices
from nas.supernet.subnetwork import EXPORT_RECORD, SubNetwork

log = logging.getLogger(__name__)

REMOTE_CODE_DIR = Path(__file__).parent / "remote_code"
REMOTE_CODE_FILES = ("configuration_nas_llama.py", "modeling_nas_llama.py")
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# Config attributes that only make sense inside this project.
_PROJECT_ONLY_CONFIG_KEYS = ("nas_layer_order",)
# The per-layer config (in remote_code/) of each base config; its model class is named alike.
_PER_LAYER_CONFIGS: dict[type[PretrainedConfig], type[NasLlamaConfig | NasMistralConfig | NasQwen2Config]] = {
    LlamaConfig: NasLlamaConfig,
    MistralConfig: NasMistralConfig,
    Qwen2Config: NasQwen2Config,
}


def _take(tensor: torch.Tensor, rows: int, cols: int | None) -> torch.Tensor:
    sliced = tensor[:rows] if tensor.dim() == 1 or cols is None else tensor[:rows, :cols]
    return sliced.detach().to("cpu").clone().contiguous()


def extract_state_dict(model: PreTrainedModel, sub: SubNetwork) -> dict[str, torch.Tensor]:
    """The sub-network's own weights (copies), under the names of a standalone model of its shape."""
    shape = shape_of(model)
    position_of = {layer: pos for pos, layer in enumerate(sub.layers)}
    d = sub.hidden_size
    tied = shape.tie_word_embeddings
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        match = _LAYER_KEY.match(name)
        if match:
            layer, rest = int(match.group(1)), match.group(2)
            if layer not in position_of:
                continue  # a dropped layer
            position = position_of[layer]
            module, _, kind = rest.rpartition(".")
            rules = layer_slices(shape, sub, position)
            if module not in rules:
                raise UnsupportedModelError(f"Do not know how to slice parameter {name!r} for export.")
            rows, cols = rules[module]
            out[f"model.layers.{position}.{rest}"] = _take(tensor, rows, None if kind == "bias" else cols)
        elif name == "model.embed_tokens.weight":
            out[name] = _take(tensor, tensor.shape[0], d)
        elif name == "model.norm.weight":
            out[name] = _take(tensor, d, None)
        elif name == "lm_head.weight":
            if not tied:
                out[name] = _take(tensor, tensor.shape[0], d)
        else:
            raise UnsupportedModelError(f"Do not know how to slice parameter {name!r} for export.")
    return out


def standalone_config(model: PreTrainedModel, sub: SubNetwork) -> PretrainedConfig:
    """The config of a standalone model of `sub`'s shape (own architecture when uniform)."""
    shape = shape_of(model)
    base = dict(model.config.to_dict())
    for key in (*_PROJECT_ONLY_CONFIG_KEYS, "architectures", "auto_map", "model_type", "transformers_version"):
        base.pop(key, None)
    kv_heads = sub.num_kv_heads(shape)
    base.update(
        num_hidden_layers=sub.num_layers,
        hidden_size=sub.hidden_size,
        head_dim=shape.head_dim,  # explicit: heads and hidden size no longer determine it
        intermediate_size=max(sub.mlp_sizes),
        num_attention_heads=max(sub.num_heads),
        num_key_value_heads=max(kv_heads),
    )
    layer_types = getattr(model, "full_layer_types", None)
    if layer_types is not None:
        # One entry per kept layer, in kept order (not the config's, reordered while a sub-network runs).
        base["layer_types"] = [layer_types[i] for i in sub.layers]
    base_class = next(cls for cls in ELASTIC_CLASSES if isinstance(model, cls))
    if sub.is_uniform:
        config = type(model.config)(**base)
        config.architectures = [base_class.__name__]
        return config
    per_layer = _PER_LAYER_CONFIGS.get(type(model.config))
    if per_layer is None:
        raise UnsupportedModelError(
            f"Heterogeneous (per-layer) export supports {', '.join(c.__name__ for c in _PER_LAYER_CONFIGS)}; "
            f"{type(model.config).__name__} sub-networks must be uniform (one MLP width and head count for all "
            "kept layers)."
        )
    config = per_layer(
        layer_intermediate_sizes=list(sub.mlp_sizes),
        layer_num_attention_heads=list(sub.num_heads),
        layer_num_key_value_heads=list(kv_heads),
        **base,
    )
    model_class = per_layer.__name__.removesuffix("Config") + "ForCausalLM"
    config.architectures = [model_class]
    config.auto_map = {
        "AutoConfig": f"configuration_nas_llama.{per_layer.__name__}",
        "AutoModelForCausalLM": f"modeling_nas_llama.{model_class}",
    }
    return config


def export_sub_network(
    model: PreTrainedModel,
    sub: SubNetwork,
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: torch.dtype | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Write `sub` as a model folder that `AutoModelForCausalLM.from_pretrained` loads.

    The folder is written whole beside its target and renamed into place (`nas.io.folders`), so a
    failed export leaves an earlier one intact; a folder holding anything else is never touched.

    Args:
        model: the elastic super-network (from `load_model`).
        sub: the sub-network to export; validated against the model first.
        out_dir: the folder to create: new, empty, or (with `overwrite`) an earlier export.
        tokenizer: saved alongside when given.
        dtype: weights' dtype on disk; the model's own by default.
        metadata: extra JSON-serialisable facts stored in `subnetwork.json` (e.g. measured metrics).
        overwrite: replace an earlier export in `out_dir` (never a folder with other files).
        finish: adds files of the caller's (a model card) to the folder before it is published.

    Returns:
        The folder's path.

    Raises:
        OutputFolderError: `out_dir` holds files this project did not write, or an export and not `overwrite`.
    """
    sub.validate(shape_of(model))
    check_output_folder(out_dir, overwrite)  # before the copies of the weights are made
    config = standalone_config(model, sub)
    weights = extract_state_dict(model, sub)
    if dtype is not None:
        weights = {k: v.to(dtype) for k, v in weights.items()}
        config.dtype = str(dtype).removeprefix("torch.")

    def write(folder: Path) -> None:
        config.save_pretrained(folder)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        if model.generation_config is not None:
            model.generation_config.save_pretrained(folder)
        if not sub.is_uniform:
            for name in REMOTE_CODE_FILES:
                shutil.copy(REMOTE_CODE_DIR / name, folder / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_json(export_record(sub, metadata), folder / EXPORT_RECORD)
        if finish is not None:
            finish(folder)

    out = publish_folder(out_dir, write, overwrite)
    log.info("Exported %s to %s", sub.describe(), out)
    return out


def export_record(sub: SubNetwork, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `subnetwork.json` holds: the sub-network (readable by `SubNetwork.load`) and `metadata`."""
    return {"sub_network": sub.to_dict(), "uniform": sub.is_uniform, **(metadata or {})}
