"""Super-network training strategies: which (sub-)networks one optimizer step trains, and how.

Each strategy runs its forward/backward passes through `backward` (the LightningModule's
`manual_backward`), so gradients of several passes accumulate before one optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.data.instructions import IGNORE_INDEX
from nas.errors import NASError
from nas.supernet.subnetwork import SubNetwork
from nas.training.samplers import SubNetworkSampler

Backward = Callable[[torch.Tensor], None]
Losses = dict[str, torch.Tensor]


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over labelled (non -100) positions."""
    # Shift the labels, not the logits (as transformers does): slicing the logits would copy the
    # largest tensor of the step, forward and backward; the last position gets no label.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over labelled positions: sub-networks learn the full network's distribution."""
    mask = labels[:, 1:] != IGNORE_INDEX
    s = F.log_softmax(student[:, :-1][mask].float(), dim=-1)
    t = F.log_softmax(teacher[:, :-1][mask].float(), dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


class DistillNotSupportedError(NASError, ValueError):
    """`strategy.distill=true` on a strategy without a teacher network to distil from."""


class Strategy:
    """Base: run one (sub-)network on the batch, backward its loss, report it.

    `supports_distill`: whether the strategy has a teacher (the full or largest network) that its
    sub-networks can learn from; `distill=True` on one without fails instead of being ignored.
    """

    supports_distill = False

    def __init__(self, distill: bool = False) -> None:
        if distill and not self.supports_distill:
            raise DistillNotSupportedError(
                f"strategy.distill=true with {type(self).__name__}: distill is supported by sandwich and "
                "alternating (they train a teacher: sandwich its largest sub-network, alternating the full network); "
                "use one of them or strategy.distill=false."
            )
        self.distill = distill

    def step(
        self,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        sampler: SubNetworkSampler,
        backward: Backward,
        step: int,
        scale: float = 1.0,
    ) -> Losses:
        raise NotImplementedError

    def _pass(
        self,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        sub: SubNetwork | None,
        backward: Backward,
        scale: float,
        teacher: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward `sub` (None: the full network) and backward its (scaled) loss; returns (loss, logits)."""
        if sub is None:
            model.reset_super_network()  # type: ignore[operator]
        else:
            model.set_sub_network(sub)  # type: ignore[operator]
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = lm_loss(logits, batch["labels"])
            train_loss = loss if teacher is None else distill_loss(logits, teacher, batch["labels"])
            backward(train_loss * scale)
        finally:
            model.reset_super_network()  # type: ignore[operator]
        return loss.detach(), logits.detach()


class StandardStrategy(Strategy):
    """`standard`: plain fine-tuning of the full network (the baseline)."""

    def step(self, model, batch, sampler, backward, step, scale=1.0) -> Losses:
        loss, _ = self._pass(model, batch, None, backward, scale)
        return {"loss/full": loss}


class RandomStrategy(Strategy):
    """`random`: k random sub-networks per step, losses averaged."""

    def __init__(self, k: int = 1, distill: bool = False) -> None:
        super().__init__(distill)
        if k < 1:
            raise NASError(f"strategy.k={k}: the random strategy needs k >= 1 sub-networks per step.")
        self.k = k

    def step(self, model, batch, sampler, backward, step, scale=1.0) -> Losses:
        losses = [self._pass(model, batch, sampler.sample(), backward, scale / self.k)[0] for _ in range(self.k)]
        return {"loss/sub": torch.stack(losses).mean()}


class SandwichStrategy(Strategy):
    """`sandwich`: largest + k random + smallest per step, gradients summed (Yu et al.; Klein et al. eq. 1).

    With `distill`, the random and smallest sub-networks learn the largest's token distribution
    (in-place distillation).
    """

    supports_distill = True

    def __init__(self, k: int = 2, distill: bool = False) -> None:
        super().__init__(distill)
        if k < 0:
            raise NASError(f"strategy.k={k}: the sandwich strategy needs k >= 0 random sub-networks per step.")
        self.k = k

    def step(self, model, batch, sampler, backward, step, scale=1.0) -> Losses:
        largest, logits = self._pass(model, batch, sampler.largest(), backward, scale)
        teacher = logits if self.distill else None
        randoms = [self._pass(model, batch, sampler.sample(), backward, scale, teacher)[0] for _ in range(self.k)]
        smallest, _ = self._pass(model, batch, sampler.smallest(), backward, scale, teacher)
        losses = {"loss/largest": largest, "loss/smallest": smallest}
        if randoms:
            losses["loss/sub"] = torch.stack(randoms).mean()
        return losses


class AlternatingStrategy(Strategy):
    """`alternating`: LLaMA-NAS / InstaTune as the paper ran it; even steps train the full network,
    odd steps one random sub-network; all weights updated.

    With `distill`, the sub-network also learns the full network's distribution (one extra forward).
    """

    supports_distill = True

    def __init__(self, distill: bool = False) -> None:
        super().__init__(distill)
        self._sub_of_step: tuple[int, SubNetwork] | None = None

    def step(self, model, batch, sampler, backward, step, scale=1.0) -> Losses:
        if step % 2 == 0:
            loss, _ = self._pass(model, batch, None, backward, scale)
            return {"loss/full": loss}
        teacher = None
        if self.distill:
            with torch.no_grad():
                teacher = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # One sub-network per optimizer step, shared by its accumulated micro-batches.
        if self._sub_of_step is None or self._sub_of_step[0] != step:
            self._sub_of_step = (step, sampler.sample())
        loss, _ = self._pass(model, batch, self._sub_of_step[1], backward, scale, teacher)
        return {"loss/sub": loss}
