"""Running calibration text through a Llama-family model one decoder layer at a time.

Layer-wise pruning methods (Wanda, SparseGPT) prune layer l from statistics of the inputs its linears see
when the layers before it are already pruned, as their authors' code does: the calibration batches'
hidden states are kept in memory, each layer runs on them once to collect its statistics, is pruned,
then runs again to produce the next layer's inputs. One pass over the model in all, instead of one per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask

from nas.supernet.subnetwork import ATTENTION_LINEARS, MLP_LINEARS

DECODER_LINEARS = ATTENTION_LINEARS + MLP_LINEARS


class LayerwiseRunner:
    """The calibration batches' hidden states, carried through the decoder one layer at a time.

    Args:
        model: a Llama-family causal LM (elastic or plain; an elastic one runs its full network).
        batches: `(batch, seq_len)` token ids (`CalibrationSet.batches`); whole windows, no padding.
    """

    def __init__(self, model: Any, batches: list[torch.Tensor]) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        decoder = model.model
        with torch.no_grad():
            self.hidden = [decoder.embed_tokens(b.to(self.device)) for b in batches]
        self._extras = [self._layer_kwargs(h) for h in self.hidden]

    def _layer_kwargs(self, hidden: torch.Tensor) -> dict[str, Any]:
        """What the model's own forward hands every decoder layer: positions, rotary embeddings, the mask."""
        decoder = self.model.model
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=decoder.config, inputs_embeds=hidden, attention_mask=None, cache=None, position_ids=position_ids
        )
        return {
            "attention_mask": mask,
            "position_ids": position_ids,
            "position_embeddings": decoder.rotary_emb(hidden, position_ids=position_ids),
        }

    @property
    def num_tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)

    def layers(self) -> Iterator[tuple[int, nn.Module]]:
        """Each decoder layer in turn; after the caller has finished with it (collected, pruned), the
        hidden states move on through it."""
        for index, layer in enumerate(self.model.model.layers):
            yield index, layer
            self.hidden = [self.run(layer, h, extra) for h, extra in zip(self.hidden, self._extras)]

    @torch.no_grad()
    def run(self, layer: nn.Module, hidden: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        out = layer(hidden, use_cache=False, **extra)
        return out[0] if isinstance(out, tuple) else out

    @torch.no_grad()
    def collect(self, layer: nn.Module, hooks: dict[str, Callable[[torch.Tensor], None]]) -> None:
        """Run `layer` on every batch, calling `hooks[name](input)` with the input of each named linear
        (`self_attn.q_proj`, `mlp.down_proj`, ...) as it runs."""
        with input_hooks(layer, hooks):
            for hidden, extra in zip(self.hidden, self._extras):
                self.run(layer, hidden, extra)


@contextmanager
def input_hooks(layer: nn.Module, hooks: dict[str, Callable[[torch.Tensor], None]]) -> Iterator[None]:
    """Forward pre-hooks on the layer's linears for as long as the block runs."""

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            hooks[name](args[0].detach())

        return hook

    handles = [layer.get_submodule(name).register_forward_pre_hook(hook_for(name)) for name in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
