"""The one LightningModule of super-network training (manual optimization: strategies run several
backward passes per step)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel

from nas.errors import NASError
from nas.training.samplers import SubNetworkSampler
from nas.training.strategies import Strategy, lm_loss


class NonFiniteLossError(NASError, FloatingPointError):
    """A NaN or infinite training loss."""


def _non_finite(what: str, value: torch.Tensor, step: int) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"{what} is {value.item()} at optimizer step {step}; training stopped. The last good checkpoint is kept: "
        "lower optim.lr, enable optim.grad_clip, or check the data, then resume with ckpt_path=last."
    )


class SuperNetModule(L.LightningModule):
    """Trains an elastic model with a strategy and a sub-network sampler.

    Args:
        model: the elastic super-network.
        strategy: which (sub-)networks each step trains.
        sampler: draws sub-networks from the search space.
        lr, weight_decay, betas, warmup_steps, min_lr_ratio: AdamW with linear warm-up then cosine decay.
        accumulate: micro-batches per optimizer step.
        grad_clip: max gradient norm (0 disables).
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: Strategy,
        sampler: SubNetworkSampler,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        accumulate: int = 1,
        grad_clip: float = 1.0,
    ) -> None:
        super().__init__()
        if accumulate < 1:
            raise NASError(f"optim.accumulate={accumulate}: use 1 or more micro-batches per step.")
        self.automatic_optimization = False
        self.model, self.strategy, self.sampler = model, strategy, sampler
        self.model.train()  # loaded models are in eval mode; Lightning no longer switches them
        self.lr, self.weight_decay = lr, weight_decay
        self.betas: tuple[float, float] = (float(betas[0]), float(betas[1]))
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.accumulate, self.grad_clip = accumulate, grad_clip
        self._micro_batch = 0
        self._step_started = time.perf_counter()
        self._step_tokens = 0

    # --- optimisation --------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay, betas=self.betas
        )
        total = max(1, self.trainer.max_steps if self.trainer.max_steps > 0 else 1)

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / (self.warmup_steps + 1)
            progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # one optimizer (configure_optimizers)
        step = self.global_step
        losses = self.strategy.step(
            self.model, batch, self.sampler, self._checked_backward(step), step, 1.0 / self.accumulate
        )
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise _non_finite(name, value, step)
        self._step_tokens += int(batch["attention_mask"].sum())
        self._micro_batch += 1
        if self._micro_batch % self.accumulate:
            return
        if self.grad_clip > 0:
            self._clip_gradients(optimizer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.lr_schedulers().step()  # type: ignore[union-attr]
        elapsed = time.perf_counter() - self._step_started
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True)
        self.log("train/lr", optimizer.param_groups[0]["lr"])
        self.log("train/tokens_per_s", self._step_tokens / max(elapsed, 1e-9))
        self._step_started, self._step_tokens = time.perf_counter(), 0

    def _checked_backward(self, step: int) -> Callable[[torch.Tensor], None]:
        """`manual_backward` that first stops the run on a NaN or infinite loss: the loss actually
        back-propagated (with distillation the KL to the teacher, not the reported cross-entropy)."""

        def backward(loss: torch.Tensor) -> None:
            if not torch.isfinite(loss.detach()).all():
                sub = self.model.active_sub_network
                which = "the full network" if sub is None else f"sub-network {sub}"
                raise _non_finite(f"The training loss of {which}", loss, step)
            self.manual_backward(loss)

        return backward

    def _clip_gradients(self, optimizer: Any) -> None:
        """Clip the global gradient norm to `grad_clip`, also when FSDP shards the gradients."""
        root = self.trainer.strategy.model
        if isinstance(root, FullyShardedDataParallel):
            # Each rank holds a shard: only the root FSDP module can compute the global norm
            # (Lightning's clip_gradients refuses FSDP for that reason).
            root.clip_grad_norm_(self.grad_clip)
        else:
            # LightningOptimizer wraps the torch optimizer; Lightning accepts it here.
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")

    # --- validation ----------------------------------------------------------------------------

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        for name, sub in (("largest", self.sampler.largest()), ("smallest", self.sampler.smallest())):
            with self.model.sub_network(sub):  # type: ignore[operator]
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Averaged over every process's share of the validation batches, so all ranks agree on it.
            loss = lm_loss(logits, batch["labels"])
            self.log(f"val/loss_{name}", loss, batch_size=batch["input_ids"].shape[0], sync_dist=True)

    # --- state that Lightning does not know about ----------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nas_sampler"] = self.sampler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "nas_sampler" in checkpoint:
            self.sampler.load_state_dict(checkpoint["nas_sampler"])
