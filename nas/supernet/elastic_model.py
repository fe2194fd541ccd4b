"""The elastic model: a Hugging Face causal LM whose sub-networks can be switched on in place.

`make_elastic(model)` swaps the classes of the model's own linear, embedding, norm and layer-list
modules for their elastic versions (no parameter is copied or renamed) and gives the model
`set_sub_network`, `reset_super_network` and the `sub_network(...)` context manager. The model stays
an instance of its Hugging Face class, so `generate`, checkpoints, lm-eval's HFLM and PEFT work on it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn
from transformers import LlamaForCausalLM, MistralForCausalLM, PretrainedConfig, PreTrainedModel, Qwen2ForCausalLM

from nas.errors import UnsupportedModelError
from nas.io.atomic import write_text
from nas.supernet.elastic_modules import ElasticEmbedding, ElasticLayerList, ElasticLinear, ElasticRMSNorm
from nas.supernet.subnetwork import ATTENTION_LINEARS, MLP_LINEARS, ModelShape, SubNetwork
from nas.supernet.switch import ATTENTION_PROJECTIONS, MLP_PROJECTIONS, SwitchTargets


class ElasticCausalLM:
    """Methods added to a Llama-family `...ForCausalLM` by `make_elastic`."""

    model: Any
    lm_head: nn.Linear
    config: Any
    _nas_shape: ModelShape
    _nas_active: SubNetwork | None = None
    _nas_layer_types: tuple[str, ...] | None = None

    @property
    def shape(self) -> ModelShape:
        """The full model's dimensions."""
        return self._nas_shape

    @property
    def full_layer_types(self) -> tuple[str, ...] | None:
        """Each layer's attention type (`config.layer_types` of the whole model), when the config has them."""
        return self._nas_layer_types

    @property
    def active_sub_network(self) -> SubNetwork | None:
        """The active sub-network, or None when the whole super-network runs."""
        return self._nas_active

    def set_sub_network(self, sub: SubNetwork) -> None:
        """Run `sub` from now on: slices of the shared weights, dropped layers skipped."""
        targets = self._switch_targets()
        plan = targets.plan(sub, self._nas_shape)
        if plan.is_full:
            self.reset_super_network()
            return
        targets.apply(plan)
        self.model.embed_tokens.active_embedding_dim = plan.hidden
        self.model.layers.set_active(targets.active_list(plan.layers))
        self._set_layer_types(plan.layers)
        self._nas_active = sub

    def reset_super_network(self) -> None:
        """Run the whole super-network again."""
        self._switch_targets().reset()
        self.model.embed_tokens.active_embedding_dim = None
        self.model.layers.set_active(None)
        self._set_layer_types(None)
        self._nas_active = None

    def _switch_targets(self) -> SwitchTargets:
        """The modules a switch writes to, resolved again only when the module tree changed (LoRA, wrappers)."""
        layers = self.model.layers
        targets: SwitchTargets | None = self.__dict__.get("_nas_switch")
        if targets is None or not targets.still_valid(layers):
            targets = SwitchTargets(layers)
            object.__setattr__(self, "_nas_switch", targets)  # a cache, not a submodule
        return targets

    def _set_layer_types(self, kept: tuple[int, ...] | None) -> None:
        """Order `config.layer_types` as the kept layers run.

        Hugging Face picks each layer's attention mask (sliding window or full, Qwen2) and KV-cache
        layer by its position in the run (`config.layer_types[i]` for the i-th layer run), so with
        layers dropped, position i must carry the type of the i-th kept layer. Dropped layers' types
        follow, keeping the list's length.
        """
        types = self._nas_layer_types
        if types is None:
            return
        if kept is None:
            self.config.layer_types = list(types)
            return
        kept_set = set(kept)
        dropped = [i for i in range(len(types)) if i not in kept_set]
        self.config.layer_types = [types[i] for i in (*kept, *dropped)]

    @contextmanager
    def sub_network(self, sub: SubNetwork) -> Iterator[SubNetwork]:
        """Activate `sub` inside the block; the previous state comes back afterwards."""
        previous = self._nas_active
        self.set_sub_network(sub)
        try:
            yield sub
        finally:
            if previous is None:
                self.reset_super_network()
            else:
                self.set_sub_network(previous)

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """Save the whole super-network as a plain Hugging Face checkpoint of the base architecture."""
        super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        # Record the base class, so that the checkpoint loads without this project.
        config_path = Path(save_directory) / "config.json"
        config = json.loads(config_path.read_text())
        base = next(cls for cls in type(self).__mro__ if cls in ELASTIC_CLASSES)
        config["architectures"] = [base.__name__]
        if self._nas_layer_types is not None:
            config["layer_types"] = list(self._nas_layer_types)  # not the active sub-network's order
        write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", config_path)


class ElasticLlamaForCausalLM(ElasticCausalLM, LlamaForCausalLM):  # type: ignore[misc]
    """Llama with elastic layers."""


class ElasticMistralForCausalLM(ElasticCausalLM, MistralForCausalLM):  # type: ignore[misc]
    """Mistral with elastic layers (same module tree as Llama)."""


class ElasticQwen2ForCausalLM(ElasticCausalLM, Qwen2ForCausalLM):  # type: ignore[misc]
    """Qwen2 with elastic layers (same module tree as Llama, biased q/k/v)."""


ELASTIC_CLASSES: dict[type[PreTrainedModel], type[PreTrainedModel]] = {
    LlamaForCausalLM: ElasticLlamaForCausalLM,
    MistralForCausalLM: ElasticMistralForCausalLM,
    Qwen2ForCausalLM: ElasticQwen2ForCausalLM,
}


def is_elastic(model: nn.Module) -> bool:
    return isinstance(model, ElasticCausalLM)


def shape_of(model: nn.Module) -> ModelShape:
    """The full dimensions of an elastic model (raises for a model `make_elastic` has not seen)."""
    if not isinstance(model, ElasticCausalLM):
        raise UnsupportedModelError(f"{type(model).__name__} is not elastic; load it with nas.load_model.")
    return model.shape


def _unsupported(name: str) -> UnsupportedModelError:
    supported = ", ".join(cls.__name__ for cls in ELASTIC_CLASSES)
    return UnsupportedModelError(
        f"{name} is not supported; the elastic super-network handles {supported} "
        "(the Llama module tree: model.layers[i].self_attn.{q,k,v,o}_proj and mlp.{gate,up,down}_proj)."
    )


def check_supported_config(config: PretrainedConfig, trust_remote_code: bool = False) -> None:
    """Raise the error `make_elastic` would, from the config alone (before any weight is read)."""
    name = ", ".join(getattr(config, "architectures", None) or []) or f"model_type {config.model_type!r}"
    remote = (getattr(config, "auto_map", None) or {}).get("AutoModelForCausalLM")
    if trust_remote_code and remote:
        raise _unsupported(f"{remote} (remote code)")
    if type(config) not in {cls.config_class for cls in ELASTIC_CLASSES}:
        raise _unsupported(name)


def make_elastic(model: PreTrainedModel) -> PreTrainedModel:
    """Turn a Llama-family causal LM into a super-network, in place, and return it."""
    if is_elastic(model):
        return model
    elastic_class = ELASTIC_CLASSES.get(type(model))
    if elastic_class is None:
        raise _unsupported(type(model).__name__)
    inner = model.model
    for index, layer in enumerate(inner.layers):
        for name in ATTENTION_PROJECTIONS:
            _swap_class(getattr(layer.self_attn, name), ElasticLinear)
        for name in MLP_PROJECTIONS:
            _swap_class(getattr(layer.mlp, name), ElasticLinear)
        _swap_class(layer.input_layernorm, ElasticRMSNorm)
        _swap_class(layer.post_attention_layernorm, ElasticRMSNorm)
        layer.self_attn.nas_layer_index = index
    _swap_class(inner.norm, ElasticRMSNorm)
    _swap_class(inner.embed_tokens, ElasticEmbedding)
    _swap_class(model.lm_head, ElasticLinear)
    _swap_class(inner.layers, ElasticLayerList)
    model.__class__ = elastic_class
    # The modules themselves say which linears have a bias (whatever the config's flags).
    first = inner.layers[0]
    biased = tuple(name for name in ATTENTION_LINEARS + MLP_LINEARS if first.get_submodule(name).bias is not None)
    shape = dataclasses.replace(ModelShape.from_config(model.config), biased_linears=biased)
    setattr(model, "_nas_shape", shape)  # noqa: B010 (not a declared attribute)
    layer_types = getattr(model.config, "layer_types", None)
    setattr(model, "_nas_layer_types", None if layer_types is None else tuple(layer_types))  # noqa: B010
    return model


def _swap_class(module: nn.Module, elastic: type[nn.Module]) -> None:
    # Changing the class keeps the instance, its parameters and its name in the parent module.
    module.__class__ = elastic
