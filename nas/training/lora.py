"""Fine-tuning modes: full, or LoRA adapters sliced together with the weights (Klein et al. 4.3, after LoNAS).

LoRA (through PEFT) wraps each elastic linear; its adapters become elastic linears too, so a
sub-network uses the first rows of `lora_B` and the first columns of `lora_A`, exactly the slice of
the merged update `B @ A` that the sliced weight uses. Adapters of dropped layers are not run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from nas.supernet.elastic_model import shape_of
from nas.supernet.elastic_modules import ElasticLinear

log = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def full_finetuning(model: PreTrainedModel) -> PreTrainedModel:
    """Every weight trains (LLaMA-NAS)."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def apply_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] = LORA_TARGETS,
) -> PreTrainedModel:
    """Add LoRA adapters in place on `target_modules` (only they train).

    A tied head shares its weight with the input embeddings, so merging a head adapter would change
    the embeddings too: for tied models the head is left out.
    """
    targets = list(target_modules)
    if shape_of(model).tie_word_embeddings and "lm_head" in targets:
        targets.remove("lm_head")
        log.info("LoRA: the head is tied to the input embeddings, so it gets no adapter.")
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets), model)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in (*module.lora_A.values(), *module.lora_B.values()):
                adapter.__class__ = ElasticLinear
    return model


def has_lora(model: PreTrainedModel) -> bool:
    return any(isinstance(m, LoraLayer) for m in model.modules())


def merge_lora(model: PreTrainedModel) -> PreTrainedModel:
    """Fold every adapter into its weight and remove the wrappers (for saving and export)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return full_finetuning(model)
