"""A tiny randomly initialised Llama (or Mistral, Qwen2) with a byte-level tokenizer, built in code (tests, smoke runs)."""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from nas.models.placement import place
from nas.supernet.elastic_model import make_elastic

_SPECIAL_TOKENS = ("<s>", "</s>")
# The Llama-family architectures the elastic model handles (same module tree).
_ARCHITECTURES: dict[str, tuple[type[LlamaConfig | MistralConfig | Qwen2Config], type[PreTrainedModel]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 256 byte tokens then `<s>` and `</s>`; no file or download needed."""
    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(byte_vocab))}
    for token in _SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>", model_max_length=4096
    )


def tiny_llama(
    num_layers: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    tie_word_embeddings: bool = True,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    architecture: str = "llama",
    sliding_window: int | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A random elastic Llama (GQA when `num_kv_heads < num_heads`) and its byte tokenizer.

    Args:
        architecture: "llama", "mistral" or "qwen2" (Qwen2 has biased q/k/v projections).
        sliding_window: attention window of Mistral's layers, or of the second half of Qwen2's layers
            (the first half attends to everything); None: full attention everywhere.
    """
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}; use one of {sorted(_ARCHITECTURES)}.")
    config_class, model_class = _ARCHITECTURES[architecture]
    tokenizer = byte_tokenizer()
    # Qwen2Config has no head_dim field (hidden_size // num_heads, as here).
    extra: dict[str, Any] = {} if architecture == "qwen2" else {"head_dim": hidden_size // num_heads}
    if architecture == "mistral":
        extra["sliding_window"] = sliding_window
    elif architecture == "qwen2" and sliding_window is not None:
        extra.update(use_sliding_window=True, sliding_window=sliding_window, max_window_layers=num_layers // 2)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    # Random init with std 0.02 gives near-uniform logits; a wider init makes sub-networks differ
    # clearly from one another, which is what tests comparing them need. Biases (Qwen2's q/k/v) start
    # at zero; random ones make a bias sliced wrongly show.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 or name.endswith(".bias"):
                param.normal_(0.0, 0.1)
    return make_elastic(place(model, device, dtype)), tokenizer
