"""Elastic drop-in replacements for the linear, embedding, norm and layer-list modules.

Each one keeps the original module's parameters and name, and computes on leading slices of them
(views, never copies or masks). Input widths are taken from the input itself, so only output widths
are state; a module whose active width is `None` runs exactly the original computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ElasticLinear(nn.Linear):
    """`nn.Linear` that uses the first `active_out_features` rows and the first `x.shape[-1]` columns."""

    active_out_features: int | None = None

    def active_parameters(self, in_features: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias (views) that an input of `in_features` channels is multiplied with."""
        weight: torch.Tensor = self.weight
        bias: torch.Tensor | None = self.bias
        out = self.active_out_features
        if out is not None:
            weight = weight[:out]
            bias = None if bias is None else bias[:out]
        if in_features != weight.shape[1]:
            # A strided view: BLAS reads it through its leading dimension, no copy is made.
            weight = weight[:, :in_features]
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.active_parameters(x.shape[-1]))

    def extra_repr(self) -> str:
        active = "" if self.active_out_features is None else f", active_out_features={self.active_out_features}"
        return super().extra_repr() + active


class ElasticEmbedding(nn.Embedding):
    """`nn.Embedding` that returns the first `active_embedding_dim` channels."""

    active_embedding_dim: int | None = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.active_embedding_dim is None else self.weight[:, : self.active_embedding_dim]
        return F.embedding(
            input_ids, weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )


class ElasticRMSNorm(nn.Module):
    """Llama-style RMSNorm over the first `x.shape[-1]` channels (same arithmetic as Hugging Face's)."""

    weight: nn.Parameter
    variance_epsilon: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        weight = self.weight if x.shape[-1] == self.weight.shape[0] else self.weight[: x.shape[-1]]
        return weight * h.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class ElasticLayerList(nn.ModuleList):
    """The decoder-layer list; slicing it (as the model's forward does) yields only the active layers.

    All layers stay registered under their names, so `state_dict`, checkpoints and optimizers see the
    whole super-network, while dropped layers are not run at all.
    """

    _active: nn.ModuleList | None = None

    def set_active(self, active: nn.ModuleList | None) -> None:
        """Run the layers of `active` (a list of this list's layers, built once per activation), or all (None)."""
        # `object.__setattr__` keeps the list out of `_modules`, so it is not registered as a child (no
        # duplicate names in state_dict).
        object.__setattr__(self, "_active", active)

    def __getitem__(self, idx: int | slice) -> nn.Module | nn.ModuleList:  # type: ignore[override]
        if isinstance(idx, slice) and self._active is not None:
            return self._active
        return super().__getitem__(idx)
