"""SliceGPT (Ashkboos et al. 2024), written from the paper for Llama-family models.

1. Fold each RMSNorm's scale into the linears that read its output (q/k/v, gate/up, the head), leaving
   weightless norms. A weightless RMSNorm commutes with any orthogonal Q: RMSNorm(xQ) = RMSNorm(x)Q.
2. Rotate the residual stream of every block by the principal components of its calibration activations:
   with Q the eigenvectors of sum(x^T x) (descending eigenvalues), readers W -> W Q, writers W -> Q^T W, the
   embedding E -> E Q, and each residual connection gets Q_before^T Q_after, since the attention and the
   MLP of each layer each have their own basis. With nothing sliced this is computational invariance: the
   model computes the same logits (`tests/test_baselines.py` checks it).
3. Slice: keep the first `(1 - ratio)` of the columns of every Q (rounded: `sliced_width`), so every
   reader, writer, shortcut and the embedding and head lose the least-variance directions.

As in the authors' sequential variant, each Q is computed from the activations of the already sliced
blocks before it, so later blocks adapt to earlier slicing. The norms keep dividing by the original width
(their RMSN). A tied head is untied (its input basis is the last block's, not the embedding's): on a small
model with a large vocabulary that costs more parameters than slicing saves at small ratios.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from transformers.masking_utils import create_causal_mask

from nas.baselines.base import Baseline, BaselineError, Pruned
from nas.baselines.layerwise import input_hooks
from nas.export.remote_code.configuration_nas_sliced import NasSlicedLlamaConfig
from nas.export.remote_code.modeling_nas_sliced import NasSlicedLlamaForCausalLM
from nas.supernet.elastic_model import shape_of
from nas.supernet.subnetwork import ModelShape

_MULTIPLE = 8


def sliced_width(hidden_size: int, ratio: float, num_heads: int = 1) -> int:
    """The residual stream's width after slicing `ratio` of it, 0 when nothing would be left.

    Transformers' Llama config requires the width to be a multiple of the attention heads (even with an explicit
    head_dim), so it is rounded to one; to a multiple of 8 heads' worth as well (SliceGPT's rounding, for fast
    kernels) where that step is at most 1/16 of the width (LLaMA-7B: 32 of 4096; SmolLM2's 9 heads: steps of 9).
    """
    if ratio == 0:
        return hidden_size
    step = num_heads
    aligned = math.lcm(_MULTIPLE, num_heads)
    if aligned * 16 <= hidden_size:
        step = aligned
    width = round(hidden_size * (1.0 - ratio) / step) * step
    return max(0, min(hidden_size, width))


def principal_components(activations: list[torch.Tensor]) -> torch.Tensor:
    """[d, d] eigenvectors of the uncentred covariance sum(x^T x) over every token, largest variance first."""
    d = activations[0].shape[-1]
    covariance = torch.zeros(d, d, dtype=torch.float64, device=activations[0].device)
    for x in activations:
        flat = x.reshape(-1, d).double()
        covariance += flat.T @ flat
    _, vectors = torch.linalg.eigh(covariance)
    return vectors.flip(-1)


def _config(model: Any, width: int) -> NasSlicedLlamaConfig:
    base = {k: v for k, v in model.config.to_dict().items() if k not in ("architectures", "auto_map", "model_type")}
    base.pop("nas_layer_order", None)
    shape = shape_of(model)
    base.update(hidden_size=width, head_dim=shape.head_dim, tie_word_embeddings=False)
    config = NasSlicedLlamaConfig(norm_dim=shape.hidden_size, **base)
    config.architectures = ["NasSlicedLlamaForCausalLM"]
    config.auto_map = {
        "AutoConfig": "configuration_nas_sliced.NasSlicedLlamaConfig",
        "AutoModelForCausalLM": "modeling_nas_sliced.NasSlicedLlamaForCausalLM",
    }
    return config


class _Calibration:
    """The calibration batches as residual-stream activations, and the inputs a block's linears see."""

    def __init__(self, sliced: Any, hidden: list[torch.Tensor]) -> None:
        self.sliced = sliced
        self.kwargs = []
        for h in hidden:
            positions = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            mask = create_causal_mask(
                config=sliced.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=positions
            )
            rotary = sliced.model.rotary_emb(h, position_ids=positions)
            self.kwargs.append({"attention_mask": mask, "position_ids": positions, "position_embeddings": rotary})

    @torch.no_grad()
    def attention_inputs_of_o_proj(self, layer: Any, residual: list[torch.Tensor]) -> list[torch.Tensor]:
        captured: list[torch.Tensor] = []
        with input_hooks(layer, {"self_attn.o_proj": captured.append}):
            for r, kwargs in zip(residual, self.kwargs):
                layer.self_attn(hidden_states=layer.input_layernorm(r), **kwargs)
        return captured

    @torch.no_grad()
    def mlp_inputs_of_down_proj(self, layer: Any, residual: list[torch.Tensor]) -> list[torch.Tensor]:
        captured: list[torch.Tensor] = []
        with input_hooks(layer, {"mlp.down_proj": captured.append}):
            for r in residual:
                layer.mlp(layer.post_attention_layernorm(r))
        return captured


def _check_supported(shape: ModelShape) -> None:
    writers_with_bias = {"self_attn.o_proj", "mlp.down_proj"} & set(shape.biased_linears)
    if writers_with_bias:
        raise BaselineError(
            f"slicegpt: biases on {sorted(writers_with_bias)} (writers of the residual stream) are not supported."
        )


@torch.no_grad()
def assign(param: torch.Tensor, value: torch.Tensor) -> None:
    """Write `value` (computed in float64) into a parameter of the sliced model, in its dtype."""
    param.copy_(value.to(param.dtype))


def _rotate_writer(
    residual: list[torch.Tensor],
    basis_in: torch.Tensor,
    inputs: list[torch.Tensor],
    weight: torch.Tensor,
    width: int,
    shortcut: torch.Tensor,
    writer: torch.nn.Linear,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One residual connection (attention's o_proj or the MLP's down_proj writing into the stream): the new
    basis is the PCA of the stream after the write; the shortcut maps the old basis to it and the writer's
    output is rotated into it. Returns the new basis and the stream in it."""
    full = [r @ basis_in.T + x.to(weight.dtype) @ weight.T for r, x in zip(residual, inputs)]
    basis_out = principal_components(full)[:, :width]
    assign(shortcut, basis_in.T @ basis_out)
    assign(writer.weight, basis_out.T @ weight)
    return basis_out, [x @ basis_out for x in full]


def slice_model(model: Any, batches: list[torch.Tensor], ratio: float) -> Any:
    """The SliceGPT model of `model` (read, not changed) at slicing `ratio`, calibrated on `batches`."""
    shape = shape_of(model)
    _check_supported(shape)
    width = sliced_width(shape.hidden_size, ratio, shape.num_heads)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    sliced: Any = NasSlicedLlamaForCausalLM(_config(model, width))
    sliced = sliced.to(device=device, dtype=torch.float32).eval()
    old = model.model
    f64 = torch.float64

    def folded(linear: Any, norm: Any) -> torch.Tensor:
        return linear.weight.to(f64) * norm.weight.to(f64).unsqueeze(0)

    hidden = [old.embed_tokens(b.to(device)).to(f64) for b in batches]
    calibration = _Calibration(sliced, [h.float() for h in hidden])
    basis = principal_components(hidden)[:, :width]
    assign(sliced.model.embed_tokens.weight, old.embed_tokens.weight.to(f64) @ basis)
    residual = [h @ basis for h in hidden]
    for old_layer, new_layer in zip(old.layers, sliced.model.layers):
        attn, new_attn = old_layer.self_attn, new_layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            assign(getattr(new_attn, name).weight, folded(getattr(attn, name), old_layer.input_layernorm) @ basis)
            if getattr(attn, name).bias is not None:
                assign(getattr(new_attn, name).bias, getattr(attn, name).bias.to(f64))
        heads_out = calibration.attention_inputs_of_o_proj(new_layer, [r.float() for r in residual])
        after_attention, residual = _rotate_writer(
            residual, basis, heads_out, attn.o_proj.weight.to(f64), width, new_layer.attn_shortcut, new_attn.o_proj
        )

        mlp, new_mlp = old_layer.mlp, new_layer.mlp
        for name in ("gate_proj", "up_proj"):
            weight = folded(getattr(mlp, name), old_layer.post_attention_layernorm) @ after_attention
            assign(getattr(new_mlp, name).weight, weight)
        mixed = calibration.mlp_inputs_of_down_proj(new_layer, [r.float() for r in residual])
        basis, residual = _rotate_writer(
            residual,
            after_attention,
            mixed,
            mlp.down_proj.weight.to(f64),
            width,
            new_layer.mlp_shortcut,
            new_mlp.down_proj,
        )
    head = model.lm_head.weight.to(f64) * old.norm.weight.to(f64).unsqueeze(0)
    assign(sliced.lm_head.weight, head @ basis)
    return sliced.to(dtype=dtype)


def sliced_cost(sliced: Any, seq_len: int = 128) -> tuple[int, dict[str, int], float]:
    """(parameters, bytes per dtype, FLOPs per token) of a sliced model: the shortcuts and the untied head
    count, as they are stored and multiplied."""
    config = sliced.config
    linear = sum(
        p.numel()
        for name, p in sliced.named_parameters()
        if name.endswith("_proj.weight") or name.endswith("_shortcut") or name == "lm_head.weight"
    )
    total = sum(p.numel() for p in sliced.parameters())
    other = total - linear
    sizes = {"fp32": 4 * total, "fp16": 2 * total, "bf16": 2 * total, "int8": linear + 2 * other}
    attention = config.num_hidden_layers * 2 * config.num_attention_heads * config.head_dim * (seq_len / 2)
    flops = 2.0 * linear + 2.0 * attention  # every matrix product of a token, the head included
    return total, sizes, flops


class SliceGpt(Baseline):
    """SliceGPT at a slicing `ratio` of the residual stream's width."""

    name = "slicegpt"
    supports_recovery = True
    ratio_meaning = "fraction of the residual stream's width sliced away"

    def check(self, ratio: float, shape: ModelShape | None = None) -> None:
        super().check(ratio, shape)
        if shape is not None:
            _check_supported(shape)
            if sliced_width(shape.hidden_size, ratio, shape.num_heads) < 1:
                raise BaselineError(
                    f"slicegpt: ratio={ratio} leaves no width of the model's {shape.hidden_size} (rounded to a multiple "
                    f"of its {shape.num_heads} attention heads); use a smaller ratio."
                )

    def prune(self, model: Any, tokenizer: Any, calibration: list[Any] | None, ratio: float) -> Pruned:
        started = time.perf_counter()
        sliced = slice_model(model, calibration or [], ratio)
        params, sizes, flops = sliced_cost(sliced)
        shape = shape_of(model)
        return Pruned(
            method=self.name,
            ratio=ratio,
            model=sliced,
            sub=None,
            params=params,
            size_bytes=sizes,
            flops_per_token=flops,
            seconds=time.perf_counter() - started,
            details={"width": sliced.config.hidden_size, "original_width": shape.hidden_size},
        )
