"""A deterministic, resumable stream of training batches.

Batch number b of a run (counted across epochs) is always the same items: epoch b // per_epoch
shuffled by (seed, epoch). A resumed run starts the stream at the batch after the last one its
checkpoint had trained on, so it sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless seeded batches of dataset indices, starting at batch `start`."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int = 0, drop_last: bool = True) -> None:
        if num_items < batch_size:
            raise ValueError(
                f"{num_items} training items cannot fill one batch of {batch_size}; lower data.batch_size."
            )
        self.num_items, self.batch_size, self.seed, self.start = num_items, batch_size, seed, start
        self.per_epoch = num_items // batch_size if drop_last else -(-num_items // batch_size)

    def _epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start
        while True:
            epoch, position = divmod(batch, self.per_epoch)
            order = self._epoch_order(epoch)
            while position < self.per_epoch:
                yield order[position * self.batch_size : (position + 1) * self.batch_size]
                position += 1
                batch += 1
