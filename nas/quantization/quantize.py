"""Quantize a sub-network: export it as a standalone model, reload it through transformers' bitsandbytes support.

Going through the export (rather than swapping modules inside the elastic model) gives exactly the
model a user gets from `from_pretrained(folder, quantization_config=...)`: the decoder's linear layers
become `bnb.nn.Linear8bitLt` / `bnb.nn.Linear4bit`, everything else stays a plain module, and
`save_quantized` writes a folder that transformers reloads as the same quantized model.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from nas.export.standalone import REMOTE_CODE_DIR, REMOTE_CODE_FILES, export_record, export_sub_network
from nas.io.atomic import write_json
from nas.io.folders import publish_folder
from nas.quantization.config import QuantizationConfig, QuantizationError, check_bitsandbytes
from nas.supernet.elastic_model import shape_of
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import EXPORT_RECORD, ModelShape, SubNetwork

log = logging.getLogger(__name__)

_NAS_LLAMA = "NasLlamaForCausalLM"


class _DropCastNotice(logging.Filter):
    """LLM.int8 quantizes activations through float16 by design; bitsandbytes says so on every forward."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


_CAST_FILTER = _DropCastNotice()


def _quiet_bitsandbytes() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _CAST_FILTER not in logger.filters:
        logger.addFilter(_CAST_FILTER)


@dataclass
class QuantizedModel:
    """A quantized sub-network, loaded and ready to evaluate.

    Attributes:
        model: the standalone bitsandbytes-quantized model (evaluation mode).
        tokenizer: its tokenizer (may be None).
        sub: the sub-network it was made from.
        shape: the super-network's shape (for the analytic parameter and FLOP counts).
        config: the quantization settings.
        folder: the unquantized standalone export it was loaded from (or the saved quantized folder).
        footprint_bytes: bytes of every tensor the model holds (see `memory_footprint`).
        hf_footprint_bytes: `model.get_memory_footprint()` (parameters and buffers only), for reference.
        export_seconds: time to export the sub-network (0 when loaded from a saved folder).
        load_seconds: time to load and quantize it.
    """

    model: PreTrainedModel
    tokenizer: Any
    sub: SubNetwork
    shape: ModelShape
    config: QuantizationConfig
    folder: Path
    footprint_bytes: int
    hf_footprint_bytes: int
    export_seconds: float
    load_seconds: float

    @property
    def footprint_gb(self) -> float:
        return self.footprint_bytes / 1e9

    @property
    def quantize_seconds(self) -> float:
        return self.export_seconds + self.load_seconds

    @property
    def params(self) -> int:
        """Parameters of the unquantized sub-network (quantization changes bytes, not their count)."""
        return sub_network_cost(self.shape, self.sub).params

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable facts (no model, no tokenizer)."""
        return {
            "method": self.config.method,
            "config": self.config.to_dict(),
            "sub_network": self.sub.to_dict(),
            "shape": asdict(self.shape),
            "footprint_bytes": self.footprint_bytes,
            "hf_footprint_bytes": self.hf_footprint_bytes,
            "footprint_gb": self.footprint_gb,
            "params": self.params,
            "export_seconds": self.export_seconds,
            "load_seconds": self.load_seconds,
            "device": str(_device_of(self.model)),
        }


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def memory_footprint(model: torch.nn.Module) -> int:
    """Bytes of every distinct tensor the model holds: parameters, buffers and bitsandbytes' quantization state.

    Unlike `PreTrainedModel.get_memory_footprint`, this counts the int8 row scales (`SCB`) and the 4-bit
    absmax values, quantization maps and double-quantization state, which bitsandbytes keeps as plain
    attributes rather than parameters, and counts tied or otherwise shared storage once.
    """
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(tensor: Any) -> None:
        nonlocal total
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        key = (tensor.data_ptr(), tensor.nbytes)
        if key not in seen:
            seen.add(key)
            total += tensor.nbytes

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        add(getattr(tensor, "SCB", None))  # Int8Params: one float32 scale per output row
        state = getattr(tensor, "quant_state", None)  # Params4bit: per-block absmax and the code book
        if state is not None:
            for name in ("absmax", "code", "offset"):
                add(getattr(state, name, None))
            nested = getattr(state, "state2", None)
            if nested is not None:
                add(getattr(nested, "absmax", None))
                add(getattr(nested, "code", None))
    return total


def _resolve_device(name: str | None, default: torch.device) -> torch.device:
    if name is None:
        return default
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # the config checked the name
    if device.type == "cuda" and not torch.cuda.is_available():
        raise QuantizationError(f"quantization.device={name} but CUDA is not available here; use cpu, auto or null.")
    return device


def _device_map(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"": device.index if device.index is not None else torch.cuda.current_device()}
    return {"": device.type}


def _model_class(folder: Path, trust_remote_code: bool) -> Any:
    """The class that loads `folder`: this project's own NasLlamaForCausalLM for per-layer exports
    (imported from the package, so no code from the folder is executed), else transformers' Auto class."""
    config = json.loads((folder / "config.json").read_text())
    if _NAS_LLAMA in (config.get("architectures") or []):
        return importlib.import_module("nas.export.remote_code.modeling_nas_llama").NasLlamaForCausalLM
    if "auto_map" in config and not trust_remote_code:
        raise QuantizationError(
            f"{folder} needs custom modeling code ({config['auto_map']}); pass trust_remote_code=True if you trust it."
        )
    return AutoModelForCausalLM


# bitsandbytes (0.50) repacks an NF4 weight for its AVX512-BF16 CPU kernel on the layer's first forward, and the
# repacking assumes in_features a multiple of the quantization block and out_features a multiple of 32: other shapes
# (a narrow sub-network's, e.g. a 48-wide residual stream) fail there with a reshape error. Those layers keep
# bitsandbytes' generic NF4 path; the others keep the fast kernel.
CPU_PACKED_ROWS = 32


def keep_unpackable_nf4_layers_generic(model: torch.nn.Module) -> list[str]:
    """Turn bitsandbytes' AVX512-BF16 CPU kernel off for the NF4 layers it cannot repack; their names."""
    import bitsandbytes as bnb

    generic = []
    for name, module in model.named_modules():
        if not isinstance(module, bnb.nn.Linear4bit) or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        weight: Any = module.weight  # a bitsandbytes Params4bit, with its quantization state
        blocksize = weight.quant_state.blocksize
        if module.in_features % blocksize or module.out_features % CPU_PACKED_ROWS:
            module.support_avx512bf16_for_cpu = False
            generic.append(name)
    return generic


def _load(folder: Path, device: torch.device, trust_remote_code: bool = False, **kwargs: Any) -> PreTrainedModel:
    _quiet_bitsandbytes()
    cls = _model_class(folder, trust_remote_code)
    extra = {"trust_remote_code": True} if cls is AutoModelForCausalLM and trust_remote_code else {}
    try:
        model = cls.from_pretrained(folder, device_map=_device_map(device), **kwargs, **extra)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise QuantizationError(
            f"bitsandbytes could not load {folder} on {device}: {exc}. Check that bitsandbytes supports this "
            "device (>= 0.45 for CPU), or set quantization.device, or use quantization=none."
        ) from exc
    keep_unpackable_nf4_layers_generic(model)
    return model.eval()  # LLM.int8 on CPU takes a dequantizing fallback in training mode


def quantize_sub_network(
    model: PreTrainedModel,
    sub: SubNetwork,
    tokenizer: Any,
    config: QuantizationConfig | str | dict[str, Any],
    work_dir: str | Path,
) -> QuantizedModel | None:
    """Export `sub` to `work_dir` and load it quantized as `config` says; None when the method is `none`.

    Args:
        model: the elastic super-network (its weights are read, not changed).
        sub: the sub-network to quantize (uniform or per-layer).
        tokenizer: saved with the export and kept on the result.
        config: a `QuantizationConfig`, a method name (`"int8"`) or a mapping of its fields.
        work_dir: where the unquantized standalone export is written (an earlier export there is replaced); the
            quantized model's unquantized modules may still map this folder's weights, so keep it
            while the result is in use.

    Returns:
        The quantized model and its measured footprint, or None for `method: none` (nothing is written).
    """
    cfg = QuantizationConfig.coerce(config)
    if not cfg.enabled:
        return None
    check_bitsandbytes()
    shape = shape_of(model)
    source_dtype = next(model.parameters()).dtype
    device = _resolve_device(cfg.device, next(model.parameters()).device)

    start = time.perf_counter()
    folder = export_sub_network(
        model, sub, work_dir, tokenizer=tokenizer, metadata={"quantization": cfg.to_dict()}, overwrite=True
    )
    export_seconds = time.perf_counter() - start

    start = time.perf_counter()
    dtype = cfg.torch_dtype(source_dtype)
    quantized = _load(folder, device, quantization_config=cfg.bnb_config(source_dtype), dtype=dtype)
    load_seconds = time.perf_counter() - start

    result = QuantizedModel(
        model=quantized,
        tokenizer=tokenizer,
        sub=sub,
        shape=shape,
        config=cfg,
        folder=Path(folder),
        footprint_bytes=memory_footprint(quantized),
        hf_footprint_bytes=int(quantized.get_memory_footprint()),
        export_seconds=export_seconds,
        load_seconds=load_seconds,
    )
    log.info(
        "Quantized %s with %s in %.1f s: %.4f GB on %s",
        sub.describe(),
        cfg.method,
        result.quantize_seconds,
        result.footprint_gb,
        device,
    )
    return result


def save_quantized(
    quantized: QuantizedModel,
    out_dir: str | Path,
    overwrite: bool = False,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Write the quantized model as a folder that `AutoModelForCausalLM.from_pretrained` reloads quantized.

    Per-layer sub-networks also get the two modeling files of `NasLlamaForCausalLM` (load them with
    `trust_remote_code=True`, or with `load_quantized`, which imports them from this project instead).
    `subnetwork.json` records the sub-network, the settings and the measured footprint. Written whole
    and renamed into place like an export: `overwrite` replaces an earlier one, never other files.
    `finish(folder)` adds files of the caller's (a model card) before the folder is published.
    """
    out = Path(out_dir)
    if out.resolve() == quantized.folder.resolve():
        raise QuantizationError(
            f"save_quantized: {out} is the folder the model was loaded from; choose another out_dir."
        )

    def write(folder: Path) -> None:
        quantized.model.save_pretrained(folder)
        if quantized.tokenizer is not None:
            quantized.tokenizer.save_pretrained(folder)
        if not quantized.sub.is_uniform:
            for name in REMOTE_CODE_FILES:
                shutil.copy(REMOTE_CODE_DIR / name, folder / name)
        record = export_record(quantized.sub) | {"quantization": quantized.to_dict()}
        write_json(record, folder / EXPORT_RECORD)
        if finish is not None:
            finish(folder)

    out = publish_folder(out, write, overwrite)
    log.info("Saved the %s-quantized %s to %s", quantized.config.method, quantized.sub.describe(), out)
    return out


def load_quantized(folder: str | Path, device: str | None = None, trust_remote_code: bool = False) -> QuantizedModel:
    """Reload a folder written by `save_quantized` (on `device`; default: CUDA when present, else CPU)."""
    path = Path(folder)
    record_file = path / EXPORT_RECORD
    try:
        record = json.loads(record_file.read_text())
        info = record["quantization"]
        sub = SubNetwork.from_dict(info["sub_network"])
        shape = ModelShape.from_dict(info["shape"])
        cfg = QuantizationConfig.coerce(info["config"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise QuantizationError(
            f"{path} is not a folder written by save_quantized ({record_file}: {exc}); quantize the sub-network again."
        ) from exc
    check_bitsandbytes()
    start = time.perf_counter()
    model = _load(path, _resolve_device(device or "auto", torch.device("cpu")), trust_remote_code)
    load_seconds = time.perf_counter() - start
    tokenizer = None
    if (path / "tokenizer_config.json").exists():
        # With the model's config given, AutoTokenizer does not read config.json's auto_map (no remote-code prompt).
        tokenizer = AutoTokenizer.from_pretrained(path, config=model.config)
    return QuantizedModel(
        model=model,
        tokenizer=tokenizer,
        sub=sub,
        shape=shape,
        config=cfg,
        folder=path,
        footprint_bytes=memory_footprint(model),
        hf_footprint_bytes=int(model.get_memory_footprint()),
        export_seconds=0.0,
        load_seconds=load_seconds,
    )
