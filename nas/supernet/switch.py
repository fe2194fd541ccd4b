"""What switching sub-networks writes, worked out once.

A switch sets the active output width of every elastic projection of every kept layer (and of its
LoRA B adapters, if any), each attention's KV-cache position, the embedding width and the list of
layers that run. Reaching 210 modules through `nn.Module.__getattr__` and writing through
`nn.Module.__setattr__` (its parameter and buffer checks) cost about 4 ms on SmolLM2-135M, 0.1% of an
8x128 forward. Here the modules are resolved once (`SwitchTargets`, rebuilt when the module tree
changes, e.g. when PEFT wraps the projections) and each sub-network's widths once (`SwitchPlan`,
cached per sub-network), and the switch writes plain attributes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from nas.supernet.subnetwork import ModelShape, SubNetwork

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
PLANS_KEPT = 256  # sub-networks whose plans stay cached (a few KB each)

# Plain attributes, never parameters, buffers or modules: `object.__setattr__` is what
# `nn.Module.__setattr__` ends up doing for them, without its checks.
_set = object.__setattr__


@dataclass(frozen=True)
class SwitchPlan:
    """One sub-network's switch: validated, and its widths per kept layer (None = the full width)."""

    layers: tuple[int, ...]
    widths: tuple[tuple[int | None, ...], ...]  # per kept layer, one per projection (attention, then MLP)
    hidden: int | None
    is_full: bool

    @classmethod
    def of(cls, sub: SubNetwork, shape: ModelShape) -> SwitchPlan:
        sub.validate(shape)
        hidden = _active(sub.hidden_size, shape.hidden_size)
        q_full, kv_full = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
        widths = []
        for mlp, heads in zip(sub.mlp_sizes, sub.num_heads):
            kv = _active(heads // shape.group_size * shape.head_dim, kv_full)
            inner = _active(mlp, shape.intermediate_size)
            widths.append((_active(heads * shape.head_dim, q_full), kv, kv, hidden, inner, inner, hidden))
        return cls(sub.layers, tuple(widths), hidden, sub.is_full(shape))


class SwitchTargets:
    """The modules a switch writes to, per decoder layer, resolved from the module tree once."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.signature = _signature(layers)
        self.attentions: list[nn.Module] = []
        self.outputs: list[tuple[tuple[nn.Module, ...], ...]] = []  # per layer, per projection
        for attention, projections in _walk(layers):
            self.attentions.append(attention)
            self.outputs.append(tuple(_width_holders(p) for p in projections))
        self._plans: dict[SubNetwork, SwitchPlan] = {}
        self._active_lists: dict[tuple[int, ...], nn.ModuleList] = {}
        self._layers = layers

    def still_valid(self, layers: nn.ModuleList) -> bool:
        """False once a projection, adapter or layer was replaced (PEFT wrapping, merging)."""
        return layers is self._layers and _signature(layers) == self.signature

    def plan(self, sub: SubNetwork, shape: ModelShape) -> SwitchPlan:
        """`sub`'s plan, worked out on its first switch (a search switches to each sub-network a few times,
        training samples anew each step: past `PLANS_KEPT` the cache starts again)."""
        plan = self._plans.get(sub)
        if plan is None:
            if len(self._plans) >= PLANS_KEPT:
                self._plans.clear()
            plan = self._plans[sub] = SwitchPlan.of(sub, shape)
        return plan

    def active_list(self, kept: tuple[int, ...]) -> nn.ModuleList:
        """The kept layers as a module list (what the model's forward iterates), built once per set."""
        active = self._active_lists.get(kept)
        if active is None:
            if len(self._active_lists) >= PLANS_KEPT:
                self._active_lists.clear()
            active = self._active_lists[kept] = nn.ModuleList([self._layers[i] for i in kept])
        return active

    def apply(self, plan: SwitchPlan) -> None:
        """Write `plan`'s widths; every attention back to its own index, kept ones to their position."""
        for attention in self.attentions:
            _set(attention, "layer_idx", attention.nas_layer_index)
        for position, (index, widths) in enumerate(zip(plan.layers, plan.widths)):
            for holders, width in zip(self.outputs[index], widths):
                for holder in holders:
                    _set(holder, "active_out_features", width)
            # The KV cache is indexed by execution position, so generation works with any kept layers.
            _set(self.attentions[index], "layer_idx", position)

    def reset(self) -> None:
        """Every projection at its full width, every attention at its own index."""
        for attention, projections in zip(self.attentions, self.outputs):
            _set(attention, "layer_idx", attention.nas_layer_index)
            for holders in projections:
                for holder in holders:
                    _set(holder, "active_out_features", None)


def _width_holders(projection: nn.Module) -> tuple[nn.Module, ...]:
    """The elastic linear behind a projection (through a LoRA wrapper) and its LoRA B adapters."""
    base = getattr(projection, "base_layer", projection)
    return (base, *getattr(projection, "lora_B", {}).values())


def _walk(layers: nn.ModuleList) -> Iterator[tuple[Any, list[Any]]]:
    """Each decoder layer's attention and its seven projections (attention's, then the MLP's), read straight
    from `_modules` (no `nn.Module.__getattr__`)."""
    for layer in layers._modules.values():
        attention, mlp = _child(layer, "self_attn"), _child(layer, "mlp")
        yield (
            attention,
            [_child(attention, n) for n in ATTENTION_PROJECTIONS] + [_child(mlp, n) for n in MLP_PROJECTIONS],
        )


def _signature(layers: nn.ModuleList) -> tuple[Any, ...]:
    """Every module a switch writes to or runs through: cheap to compare, and different once a layer,
    projection or adapter was replaced or wrapped."""
    parts: list[Any] = list(layers._modules.values())  # a wrapped layer (FSDP, checkpointing) must run wrapped
    for attention, projections in _walk(layers):
        parts.append(attention)
        for projection in projections:
            parts.append(projection)
            adapters = projection._modules.get("lora_B")
            if adapters is not None:
                parts.extend(adapters._modules.values())
    return tuple(parts)


def _child(module: Any, name: str) -> Any:
    """`module.name` for a submodule; through `__getattr__` only for wrappers that forward it (FSDP units,
    activation checkpointing), whose own `_modules` hold the wrapped module instead."""
    child = module._modules.get(name)
    return getattr(module, name) if child is None else child


def _active(width: int, full: int) -> int | None:
    """`None` (the unsliced fast path) when a width is the full one."""
    return None if width == full else width
