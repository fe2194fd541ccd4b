"""Export a sub-network as a GGUF file for llama.cpp, Ollama and LM Studio.

Uniform sub-networks (one MLP width and head count in every kept layer) are plain `llama` models, which every
GGUF reader (llama.cpp, transformers' GGUF loader) understands. Per-layer ones use llama.cpp's `deci`
architecture (DeciLM / Nemotron-NAS, itself a NAS-derived Llama): the same tensors, with per-layer arrays for
the head counts and feed-forward lengths. Kept layers are numbered in execution order.

Weights are written as `f32`, `f16` or `q8_0` (llama.cpp's 8-bit blocks of 32 with one f16 scale); norms stay
f32, as llama.cpp expects. The query and key projections are permuted from Hugging Face's rotate-half RoPE
layout to the interleaved one GGUF readers expect (transformers' GGUF loader reverses it). The tokenizer (BPE
or SentencePiece-style `tokenizer.json`) goes in as GGUF's token list, merges and special tokens.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from transformers import LlamaConfig, MistralConfig, PreTrainedModel, PreTrainedTokenizerBase

from nas.errors import UnsupportedModelError
from nas.export.standalone import extract_state_dict
from nas.supernet.elastic_model import shape_of
from nas.supernet.subnetwork import ModelShape, SubNetwork

log = logging.getLogger(__name__)

GGUF_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
# Hugging Face module -> GGUF tensor name inside a block.
_BLOCK_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}


def architecture(sub: SubNetwork) -> str:
    """`llama` for uniform sub-networks, `deci` (per-layer head counts and feed-forward lengths) otherwise."""
    return "llama" if sub.is_uniform else "deci"


def to_interleaved_rope(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a query/key projection from rotate-half order (each head: first halves, then second halves of
    its rotary pairs) to interleaved pairs (x0, x_half, x1, x_half+1, ...), head by head."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def from_interleaved_rope(weight: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `to_interleaved_rope`."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _check_supported(model: PreTrainedModel) -> None:
    config = model.config
    if not isinstance(config, LlamaConfig | MistralConfig):
        raise UnsupportedModelError(
            f"GGUF export supports Llama and Mistral models; {type(config).__name__} is not one (export.format=hf "
            "writes a Hugging Face folder instead)."
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise UnsupportedModelError("GGUF export of Llama models with biased projections is not supported.")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if kind not in (None, "default"):
        raise UnsupportedModelError(
            f"GGUF export of RoPE scaling {kind!r} is not supported yet (llama.cpp stores it as a rope_freqs tensor); "
            "export.format=hf writes a Hugging Face folder."
        )


def _rope_theta(config: Any) -> float:
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and rope.get("rope_theta") is not None:
        return float(rope["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def _add_hyperparameters(writer: gguf.GGUFWriter, config: Any, shape: ModelShape, sub: SubNetwork) -> None:
    kv = list(sub.num_kv_heads(shape))
    per_layer = not sub.is_uniform
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(sub.hidden_size)
    writer.add_block_count(sub.num_layers)
    writer.add_feed_forward_length(list(sub.mlp_sizes) if per_layer else sub.mlp_sizes[0])
    writer.add_head_count(list(sub.num_heads) if per_layer else sub.num_heads[0])
    writer.add_head_count_kv(kv if per_layer else kv[0])
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(shape.vocab_size)


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int, pre: str) -> None:
    """Token list, types, scores, merges and special tokens, from the tokenizer's saved files."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        vocab: Any
        try:
            vocab = gguf.vocab.BpeVocab(Path(folder))
        except FileNotFoundError:
            vocab = gguf.vocab.LlamaHfVocab(Path(folder))
        tokens, scores, types = [], [], []
        for text, score, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(kind)
        if len(tokens) > vocab_size:
            raise UnsupportedModelError(
                f"The tokenizer has {len(tokens)} tokens but the model's embedding only {vocab_size} rows."
            )
        for i in range(len(tokens), vocab_size):  # embedding rows beyond the tokenizer: padding, as llama.cpp pads
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        writer.add_tokenizer_model(vocab.tokenizer_model)
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        special = gguf.vocab.SpecialVocab(Path(folder), load_merges=vocab.tokenizer_model == "gpt2", n_vocab=vocab_size)
        special.add_to_gguf(writer, quiet=True)


def _encoded(array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """A weight in `qtype`; 1-D tensors (norms) stay f32, and rows not a whole number of q8_0 blocks fall back
    to f16."""
    if array.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % 32 == 0:
        return gguf.quants.quantize(array.astype(np.float32), qtype), qtype
    return array.astype(np.float16), gguf.GGMLQuantizationType.F16


def gguf_tensors(model: PreTrainedModel, sub: SubNetwork) -> dict[str, np.ndarray]:
    """The sub-network's weights under GGUF names (float32, queries and keys in interleaved RoPE order)."""
    shape = shape_of(model)
    kv = sub.num_kv_heads(shape)
    out: dict[str, np.ndarray] = {}
    for name, tensor in extract_state_dict(model, sub).items():
        array = tensor.to(torch.float32).numpy()
        if name in _GLOBAL_TENSORS:
            out[_GLOBAL_TENSORS[name]] = array
            continue
        if name == "lm_head.weight":
            out["output.weight"] = array
            continue
        _, _, position, rest = name.split(".", 3)
        module = rest.removesuffix(".weight")
        pos = int(position)
        if module == "self_attn.q_proj":
            array = to_interleaved_rope(array, sub.num_heads[pos])
        elif module == "self_attn.k_proj":
            array = to_interleaved_rope(array, kv[pos])
        out[f"blk.{pos}.{_BLOCK_TENSORS[module]}.weight"] = array
    return out


def export_gguf(
    model: PreTrainedModel,
    sub: SubNetwork,
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    weight_type: str = "f16",
    pre_tokenizer: str = "default",
    name: str | None = None,
) -> Path:
    """Write `sub` of `model` as a GGUF file at `path` (written beside it and renamed into place).

    Args:
        model: the elastic super-network.
        sub: the sub-network; validated against the model.
        path: the `.gguf` file to write (replaced if it exists).
        tokenizer: the model's tokenizer (GGUF files carry their own).
        weight_type: f32, f16 or q8_0.
        pre_tokenizer: llama.cpp's name of the tokenizer's pre-tokenization (`tokenizer.ggml.pre`: smollm,
            llama-bpe, ...); `default` is llama.cpp's generic split.
        name: `general.name` of the file.
    """
    if weight_type not in GGUF_TYPES:
        raise UnsupportedModelError(f"GGUF weight type {weight_type!r} is not one of {sorted(GGUF_TYPES)}.")
    _check_supported(model)
    shape = shape_of(model)
    sub.validate(shape)
    qtype, file_type = GGUF_TYPES[weight_type]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, architecture(sub))
        writer.add_type("model")
        writer.add_name(name or f"{getattr(model.config, '_name_or_path', '') or 'model'} sub-network")
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hyperparameters(writer, model.config, shape, sub)
        _add_tokenizer(writer, tokenizer, shape.vocab_size, pre_tokenizer)
        for tensor_name, array in gguf_tensors(model, sub).items():
            data, dtype = _encoded(array, qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("Wrote %s (%s, %s, %.1f MB)", path, architecture(sub), weight_type, path.stat().st_size / 1e6)
    return path


def read_gguf_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, float32 tensors in Hugging Face row order) of a GGUF file, read back with the `gguf` package:
    dequantized, with queries and keys returned to rotate-half order. For checks and tests."""
    reader = gguf.GGUFReader(str(path))
    metadata: dict[str, Any] = {}
    for field in reader.fields.values():
        if field.name.startswith("tokenizer.ggml.") and field.name not in (
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
        ):
            continue
        metadata[field.name] = field.contents()
    arch = metadata["general.architecture"]
    heads, kv = metadata[f"{arch}.attention.head_count"], metadata[f"{arch}.attention.head_count_kv"]
    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        parts = tensor.name.split(".")
        if parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
            layer = int(parts[1])
            count = heads if parts[2] == "attn_q" else kv
            array = from_interleaved_rope(array, count[layer] if isinstance(count, list) else count)
        tensors[tensor.name] = array
    return metadata, tensors
