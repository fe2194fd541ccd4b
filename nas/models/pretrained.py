"""Loading Hugging Face checkpoints (hub ids or local folders) as elastic super-networks."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nas.errors import ModelLoadError, NASError
from nas.models.placement import place, torch_dtype
from nas.supernet.elastic_model import check_supported_config, make_elastic


def from_pretrained(
    name_or_path: str,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Llama-family causal LM and its tokenizer from the hub or a folder, made elastic."""
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or name_or_path.startswith(".") or path.exists()
    if looks_local and not (path / "config.json").is_file():
        raise ModelLoadError(
            f"No model at {path}: expected a folder with config.json and weights "
            "(as written by save_pretrained or export_sub_network)."
        )
    source = str(path) if looks_local else name_or_path
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
        check_supported_config(config, trust_remote_code)  # before any weight is read
        model = AutoModelForCausalLM.from_pretrained(
            source, config=config, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, revision=revision
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except NASError:
        raise
    except OSError as exc:
        where = "folder" if looks_local else "Hugging Face hub id (is the hub reachable? HF_HUB_OFFLINE set?)"
        raise ModelLoadError(f"Could not load model {name_or_path!r} as a {where}: {exc}") from exc
    except Exception as exc:  # corrupt safetensors, bad config.json, ...
        if looks_local:
            raise ModelLoadError(f"The model folder {path} is corrupt or incomplete: {exc}") from exc
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return make_elastic(place(model, device, dtype)), tokenizer
