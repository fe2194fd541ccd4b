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
    """Endless seeded batches of dataset indices, starting at this process's batch `start`.

    With several processes (DDP), process `rank` of `world_size` takes global batches rank,
    rank + world_size, ... so together they see each global batch once.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items < batch_size:
            raise ValueError(
                f"{num_items} training items cannot fill one batch of {batch_size}; lower data.batch_size."
            )
        self.num_items, self.batch_size, self.seed, self.start = num_items, batch_size, seed, start
        self.rank, self.world_size = rank, world_size
        self.per_epoch = num_items // batch_size if drop_last else -(-num_items // batch_size)

    def _epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start * self.world_size + self.rank
        cached_epoch, order = -1, []
        while True:
            epoch, position = divmod(batch, self.per_epoch)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, self._epoch_order(epoch)
            yield order[position * self.batch_size : (position + 1) * self.batch_size]
            batch += self.world_size
