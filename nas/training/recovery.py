"""Recovery fine-tuning of a pruned model (LLM-Pruner's and SliceGPT's "RFT"), with the training stack's own
pieces: the instruction data module, LoRA adapters, Lightning, the same loss.

A pruned sub-network of an elastic model trains with that sub-network active (gradients reach only the
slices it uses); a standalone model (SliceGPT's) trains as it is. Adapters sit on every projection of the
decoder (`q/k/v/o`, `gate/up/down`) and are merged into the weights afterwards, so the result has the
pruned model's shape and saves like it.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from nas.supernet.elastic_modules import ElasticLinear
from nas.supernet.subnetwork import SubNetwork
from nas.training.lora import merge_lora
from nas.training.strategies import lm_loss

log = logging.getLogger(__name__)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class RecoveryModule(L.LightningModule):
    """Plain causal-LM fine-tuning of whatever the model computes (with `sub` active when given)."""

    def __init__(self, model: Any, sub: SubNetwork | None, lr: float, warmup_steps: int, total_steps: int) -> None:
        super().__init__()
        self.model, self.sub = model, sub
        self.lr, self.warmup_steps, self.total_steps = lr, warmup_steps, total_steps

    def _active(self) -> Any:
        return self.model.sub_network(self.sub) if self.sub is not None else nullcontext()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with self._active():
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = lm_loss(logits, batch["labels"])
        self.log("recovery/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.lr)

        def schedule(step: int) -> float:  # linear warm-up, then cosine to 10 %
            if step < self.warmup_steps:
                return (step + 1) / (self.warmup_steps + 1)
            progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def add_lora(model: Any, r: int, alpha: int) -> None:
    """LoRA adapters on every decoder projection; everything else frozen."""
    for param in model.parameters():
        param.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, target_modules=list(PROJECTIONS)), model)
    if hasattr(model, "set_sub_network"):  # an elastic model: its adapters slice with the weights
        for module in model.modules():
            if isinstance(module, LoraLayer):
                for adapter in (*module.lora_A.values(), *module.lora_B.values()):
                    adapter.__class__ = ElasticLinear


def recover(
    model: Any,
    tokenizer: Any,
    datamodule: Any,
    sub: SubNetwork | None = None,
    steps: int = 100,
    lr: float = 1e-4,
    r: int = 8,
    alpha: int = 16,
    warmup_steps: int = 10,
) -> dict[str, Any]:
    """Fine-tune `model` (in place) with LoRA for `steps` optimizer steps on `datamodule`'s instruction data,
    then merge the adapters; returns the run's facts (steps, last loss, seconds)."""
    was_training = model.training
    add_lora(model, r, alpha)
    module = RecoveryModule(model, sub, lr, warmup_steps, steps)
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    model.train()
    trainer.fit(module, datamodule=datamodule.bind(tokenizer))
    merge_lora(model)
    for param in model.parameters():
        param.requires_grad_(False)
    model.train(was_training)
    loss = trainer.callback_metrics.get("recovery/loss")
    last = float(loss) if loss is not None else None
    return {"steps": trainer.global_step, "lr": lr, "r": r, "alpha": alpha, "last_loss": last}
