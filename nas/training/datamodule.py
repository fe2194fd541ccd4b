"""LightningDataModule for instruction fine-tuning of the super-network."""

from __future__ import annotations

import logging
import math
import random
from functools import partial
from typing import Any, cast

import lightning as L
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from nas.data.instructions import (
    IGNORE_INDEX,
    DataFormatError,
    TokenizedExample,
    collate,
    load_alpaca_records,
    pack,
    tokenize_record,
)
from nas.training.batch_stream import ResumableBatchSampler

log = logging.getLogger(__name__)


def _with_targets(examples: list[TokenizedExample]) -> list[TokenizedExample]:
    """Drop examples whose response was truncated away entirely (they would give a NaN loss)."""
    kept = [e for e in examples if any(label != IGNORE_INDEX for label in e.labels)]
    if len(kept) < len(examples):
        log.warning("Dropped %d examples with no response token left after truncation.", len(examples) - len(kept))
    return kept


class InstructionDataModule(L.LightningDataModule):
    """Alpaca-format data: a seeded train/validation split, tokenised once, batches resumable by step.

    Args:
        source, path, hub_id, data_dir: where the records come from (see `load_alpaca_records`).
        max_length: tokens per example (longer ones are truncated).
        batch_size: examples per micro-batch.
        val_size: examples held out for validation.
        train_on_prompt: also put the prompt tokens in the loss.
        packing: concatenate training examples into full `max_length` sequences instead of padding.
        seed: split and shuffle seed.
        limit: use only the first N records (quick runs); None for all.
    """

    def __init__(
        self,
        source: str = "auto",
        path: str | None = None,
        hub_id: str = "tatsu-lab/alpaca",
        data_dir: str | None = None,
        max_length: int = 512,
        batch_size: int = 4,
        val_size: int = 32,
        train_on_prompt: bool = False,
        packing: bool = False,
        seed: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        self.source, self.path, self.hub_id, self.data_dir = source, path, hub_id, data_dir
        self.max_length, self.batch_size, self.val_size = max_length, batch_size, val_size
        self.train_on_prompt, self.packing, self.seed, self.limit = train_on_prompt, packing, seed, limit
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_examples: list[TokenizedExample] = []
        self.val_examples: list[TokenizedExample] = []

    def check_records(self) -> list[dict[str, Any]]:
        """Load and check the records (cheap; done before the model loads so bad data fails early)."""
        records = load_alpaca_records(self.source, self.path, self.hub_id, self.data_dir)
        return records[: self.limit] if self.limit else records

    def bind(self, tokenizer: PreTrainedTokenizerBase) -> InstructionDataModule:
        self.tokenizer = tokenizer
        return self

    def setup(self, stage: str | None = None) -> None:
        if self.train_examples:
            return
        assert self.tokenizer is not None, "call bind(tokenizer) first"
        records = self.check_records()
        if len(records) <= self.val_size:
            raise DataFormatError(
                f"{len(records)} records leave none for training after holding out data.val_size={self.val_size}; "
                "lower data.val_size or raise data.limit."
            )
        order = list(range(len(records)))
        random.Random(self.seed).shuffle(order)
        val_ids = set(order[: self.val_size])
        tokenize = partial(
            tokenize_record, tokenizer=self.tokenizer, max_length=self.max_length, train_on_prompt=self.train_on_prompt
        )
        self.train_examples = _with_targets([tokenize(records[i]) for i in range(len(records)) if i not in val_ids])
        self.val_examples = _with_targets([tokenize(records[i]) for i in sorted(val_ids)])
        if self.packing:
            self.train_examples = _with_targets(pack(self.train_examples, self.max_length))
        if not self.train_examples:
            raise DataFormatError(
                f"No training example keeps a response token within data.max_length={self.max_length}; raise it."
            )

    def steps_for_epochs(self, epochs: float, accumulate: int, world_size: int = 1) -> int:
        """Optimizer steps that `epochs` passes over the training split take when `world_size`
        processes each train `accumulate` micro-batches per step (they share each epoch's batches)."""
        self.setup()
        batches = len(self.train_examples) // self.batch_size
        return max(1, math.ceil(epochs * batches / (accumulate * world_size)))

    def _collate(self):
        assert self.tokenizer is not None
        return partial(collate, pad_token_id=self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        # Resume at the batch after the last one trained on: the trainer's optimizer steps are
        # restored from the checkpoint before this is called.
        module = self.trainer.lightning_module if self.trainer else None
        start = self.trainer.global_step * getattr(module, "accumulate", 1) if self.trainer else 0
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = ResumableBatchSampler(
            len(self.train_examples), self.batch_size, self.seed, start=start, rank=rank, world_size=world
        )
        return DataLoader(cast(Dataset, self.train_examples), batch_sampler=sampler, collate_fn=self._collate())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(cast(Dataset, self.val_examples), batch_size=self.batch_size, collate_fn=self._collate())
