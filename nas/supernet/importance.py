"""Activation-based importance of MLP neurons, KV groups, embedding channels and layers (Minitron; Klein et al. 4.2).

Forward hooks on the full network collect, over every token of a calibration set:

- MLP neuron j of a layer: mean |act(gate_j) * up_j|, the input of `down_proj`.
- KV group g of a layer: the sum over the group's query heads of the mean L2 norm of the head's attention
  output (the input of `o_proj`); sub-networks keep whole groups, so groups are what is ranked.
- Embedding channel c: mean |RMSNorm output_c| over every norm reading the residual stream (Minitron's
  LayerNorm-activation score).
- Layer: block importance, 1 - mean cosine similarity between the layer's input and output hidden
  states (Men et al., ShortGPT; Minitron's depth score): a layer that barely changes the residual
  stream is the first to drop.

Only the decoder runs (`model.model`), not the LM head: its logits would cost time and memory and carry
no score. Models are typed `Any`: the Hugging Face module tree (`model.model.layers[i].mlp...`) is
dynamic, and `shape_of` checks that the model is an elastic one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm

from nas.errors import NASError
from nas.io.atomic import write_json
from nas.supernet.elastic_model import shape_of
from nas.supernet.subnetwork import ModelShape, SubNetwork


class ImportanceError(NASError, ValueError):
    """Scores that do not fit the model, or a calibration set with no tokens."""


def descending_order(values: Sequence[float]) -> list[int]:
    """Indices from the largest value to the smallest; ties keep index order (so re-sorting is a no-op)."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


@dataclass
class ImportanceScores:
    """Importance per neuron, KV group, embedding channel and layer; larger is more important.

    Attributes:
        mlp: `[layer][neuron]` scores of the MLP intermediate channels.
        heads: `[layer][kv_group]` scores of the attention KV groups (with their query heads).
        hidden: `[channel]` scores of the embedding (residual stream) channels.
        layers: `[layer]` block importance of the decoder layers.
        num_tokens: calibration tokens the scores average over.
    """

    mlp: list[list[float]]
    heads: list[list[float]]
    hidden: list[float]
    layers: list[float]
    num_tokens: int = 0

    def layer_order(self) -> list[int]:
        """Layer indices from most to least important (what `config.nas_layer_order` stores)."""
        return descending_order(self.layers)

    def check_fits(self, shape: ModelShape) -> ImportanceScores:
        """Raise `ImportanceError` when these scores were computed for a model of another shape."""
        expected = {
            "layers": (len(self.layers), shape.num_layers),
            "hidden": (len(self.hidden), shape.hidden_size),
            "mlp layers": (len(self.mlp), shape.num_layers),
            "heads layers": (len(self.heads), shape.num_layers),
        }
        expected |= {f"mlp[{i}]": (len(row), shape.intermediate_size) for i, row in enumerate(self.mlp)}
        expected |= {f"heads[{i}]": (len(row), shape.num_kv_heads) for i, row in enumerate(self.heads)}
        wrong = {k: v for k, v in expected.items() if v[0] != v[1]}
        if wrong:
            detail = ", ".join(f"{k} has {got} entries, the model {want}" for k, (got, want) in wrong.items())
            raise ImportanceError(f"These importance scores belong to a model of another shape: {detail}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportanceScores:
        try:
            return cls(**data)
        except TypeError as exc:
            raise ImportanceError(
                f"Importance scores need the keys mlp, heads, hidden, layers (and num_tokens): {exc}."
            ) from exc

    def save(self, path: str | Path) -> None:
        write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> ImportanceScores:
        p = Path(path)
        if not p.is_file():
            raise ImportanceError(f"No importance scores at {p}; compute them with `python -m nas.reorder`.")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ImportanceError(f"{p} is not valid JSON ({exc}).") from exc
        # `importance.json` beside a reordered model keeps the scores under "scores".
        return cls.from_dict(data.get("scores", data))


class _Recorder:
    """Forward hooks that sum per-channel activation statistics over the calibration tokens."""

    def __init__(self, model: Any, shape: ModelShape) -> None:
        self.shape = shape
        device = next(model.parameters()).device
        # float64 sums: hundreds of thousands of tokens are added up without rounding drift.
        f64 = torch.float64
        n = shape.num_layers
        self.mlp = torch.zeros(n, shape.intermediate_size, dtype=f64, device=device)
        self.heads = torch.zeros(n, shape.num_heads, dtype=f64, device=device)
        self.hidden = torch.zeros(shape.hidden_size, dtype=f64, device=device)
        self.layers = torch.zeros(n, dtype=f64, device=device)
        self.num_norms = 2 * n + 1
        self._layer_input: torch.Tensor | None = None
        self.handles: list[RemovableHandle] = []
        decoder = model.model
        for i, layer in enumerate(decoder.layers):
            self.handles += [
                layer.mlp.down_proj.register_forward_pre_hook(self._sum_into(self.mlp[i])),
                layer.self_attn.o_proj.register_forward_pre_hook(self._heads_into(self.heads[i])),
                layer.input_layernorm.register_forward_hook(self._norm_output),
                layer.post_attention_layernorm.register_forward_hook(self._norm_output),
                layer.register_forward_pre_hook(self._keep_input, with_kwargs=True),
                layer.register_forward_hook(self._change_into(i)),
            ]
        self.handles.append(decoder.norm.register_forward_hook(self._norm_output))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    @staticmethod
    def _abs_sum(x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().abs().sum(dim=tuple(range(x.dim() - 1))).double()

    @staticmethod
    def _add(target: torch.Tensor, value: torch.Tensor) -> None:
        # `.to`: a model split over devices (device_map) computes each layer where its weights live.
        target.add_(value.to(target.device))

    def _sum_into(self, target: torch.Tensor) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self._add(target, self._abs_sum(args[0]))

        return hook

    def _heads_into(self, target: torch.Tensor) -> Any:
        head_dim = self.shape.head_dim

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float()
            norms = x.view(*x.shape[:-1], -1, head_dim).norm(dim=-1)  # (..., heads)
            self._add(target, norms.sum(dim=tuple(range(norms.dim() - 1))).double())

        return hook

    def _norm_output(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._add(self.hidden, self._abs_sum(output))

    def _keep_input(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._layer_input = (args[0] if args else kwargs["hidden_states"]).detach()

    def _change_into(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            assert self._layer_input is not None
            cosine = F.cosine_similarity(self._layer_input.float(), out.detach().float(), dim=-1)
            self._add(self.layers[index], (1.0 - cosine).sum().double())
            self._layer_input = None

        return hook

    def scores(self, num_tokens: int) -> ImportanceScores:
        s = self.shape
        groups = self.heads.view(s.num_layers, s.num_kv_heads, s.group_size).sum(dim=-1)
        return ImportanceScores(
            mlp=(self.mlp / num_tokens).tolist(),
            heads=(groups / num_tokens).tolist(),
            hidden=(self.hidden / (num_tokens * self.num_norms)).tolist(),
            layers=(self.layers / num_tokens).tolist(),
            num_tokens=num_tokens,
        )


def compute_importance(
    model: Any, batches: Iterable[torch.Tensor], progress: bool = True, desc: str = "importance"
) -> ImportanceScores:
    """Score the full network of an elastic model on calibration batches of token ids.

    Args:
        model: an elastic Llama-family causal LM (from `nas.load_model`); its active sub-network, if
            any, is set aside while scoring and restored afterwards.
        batches: `(batch, seq_len)` token-id tensors (e.g. `CalibrationSet.batches(tokenizer)`); rows
            are whole windows, so no attention mask is used.
        progress: show a progress bar over the batches.
        desc: the progress bar's label.
    """
    shape = shape_of(model)
    batches = list(batches)
    device = next(model.parameters()).device
    recorder = _Recorder(model, shape)
    was_training = model.training
    num_tokens = 0
    try:
        model.eval()
        with torch.inference_mode(), model.sub_network(SubNetwork.full(shape)):
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
                ids = batch.to(device)
                if ids.dim() == 1:
                    ids = ids.unsqueeze(0)
                model.model(input_ids=ids, use_cache=False)
                num_tokens += ids.numel()
    finally:
        recorder.remove()
        model.train(was_training)
    if num_tokens == 0:
        raise ImportanceError("The calibration set gave no tokens; check calibration.num_samples and the text file.")
    return recorder.scores(num_tokens)
