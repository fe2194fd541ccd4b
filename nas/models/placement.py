"""Device and dtype placement from configuration strings."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from nas.errors import ModelLoadError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def torch_dtype(name: str) -> torch.dtype:
    """`float32` / `bfloat16` / `float16` (or fp32 / bf16 / fp16) to a torch dtype."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelLoadError(f"Unknown dtype {name!r}; use one of {sorted(_DTYPES)} (model.dtype=...).") from None


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"model.device={name} but CUDA is not available here; use model.device=cpu or auto.")
    return device


def place(model: PreTrainedModel, device: str, dtype: str) -> PreTrainedModel:
    """Move `model` to `device` and `dtype`, in evaluation mode."""
    # transformers wraps `to` in a way mypy misreads.
    model.to(device=resolve_device(device), dtype=torch_dtype(dtype))  # type: ignore[call-arg]
    return model.eval()


def worker_device(device: str, worker_index: int) -> str:
    """The device of search worker `worker_index` on this machine: with CUDA in use (`cuda`, `auto` where CUDA
    is present) and several GPUs visible, workers take them in turn (`cuda:0`, `cuda:1`, ...); an explicit
    `cuda:N`, or CPU, is kept as configured."""
    uses_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not uses_cuda:
        return device
    count = torch.cuda.device_count()
    return f"cuda:{worker_index % count}" if count > 1 else device
