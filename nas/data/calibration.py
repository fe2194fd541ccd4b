"""Plain-text calibration sets (WikiText-2 raw, the C4 sample): text from the data folder as token batches.

The documents are tokenized, joined with the tokenizer's end-of-sequence token between them, and cut
into non-overlapping windows of `seq_len` tokens; `num_samples` windows are drawn with a fixed seed
(so a run is reproducible) and grouped into batches of equal-length rows (no padding needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.data.paths import text_source
from nas.data.sources import read_jsonl
from nas.errors import NASError


class CalibrationError(NASError, ValueError):
    """A calibration setting out of range, or a text too short or malformed for it."""


@dataclass
class CalibrationSet:
    """Token windows from one text file, built from `conf/calibration/*.yaml`.

    Args:
        name: a label for logs and `importance.json`.
        data_file: the file inside the data folder; `.jsonl` files hold one document per line under
            `text_field`, any other file is one plain-text document.
        text_file: any file in the same formats; when set it replaces `data_file`.
        data_dir: the data folder (None: $NAS_DATA_DIR, else ../shared/data).
        text_field: the JSONL field holding a document's text.
        num_samples: windows to draw.
        seq_len: tokens per window.
        batch_size: windows per batch.
        seed: which windows are drawn.
    """

    name: str = "c4"
    data_file: str = "c4/c4_demo.jsonl"
    text_file: str | None = None
    data_dir: str | None = None
    text_field: str = "text"
    num_samples: int = 128
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    path: Path = field(init=False)

    def __post_init__(self) -> None:
        # Settings and the file are checked now, before a model is loaded.
        for key in ("num_samples", "seq_len", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise CalibrationError(f"calibration.{key}={getattr(self, key)}: use 1 or more.")
        self.path = text_source(self.text_file, self.data_file, self.data_dir, "calibration.text_file")

    def documents(self) -> list[str]:
        """The file's documents: one per JSONL line, or the whole file."""
        if self.path.suffix != ".jsonl":
            return [self.path.read_text(encoding="utf-8")]
        docs = []
        # read_jsonl splits on "\n" only (C4 text holds U+2028 inside strings) and names bad lines.
        for number, record in enumerate(read_jsonl(self.path), start=1):
            if not isinstance(record.get(self.text_field), str):
                raise CalibrationError(
                    f"{self.path} record {number} has no string field {self.text_field!r}; "
                    "set calibration.text_field to the field holding the text."
                )
            docs.append(record[self.text_field])
        return docs

    def token_windows(self, tokenizer: Any) -> torch.Tensor:
        """`(num_samples, seq_len)` token ids drawn from the text."""
        eos = getattr(tokenizer, "eos_token_id", None)
        ids: list[int] = []
        # One batched call (the fast tokenizers run it in parallel); verbose=False: documents longer than
        # model_max_length are windowed here on purpose.
        for doc_ids in tokenizer(self.documents(), add_special_tokens=False, verbose=False)["input_ids"]:
            ids.extend(doc_ids)
            if eos is not None:
                ids.append(int(eos))
        available = len(ids) // self.seq_len
        if available < self.num_samples:
            raise CalibrationError(
                f"{self.path.name} holds {len(ids)} tokens, {available} windows of calibration.seq_len="
                f"{self.seq_len}, fewer than calibration.num_samples={self.num_samples}; lower one of them."
            )
        windows = torch.tensor(ids[: available * self.seq_len], dtype=torch.long).view(available, self.seq_len)
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(available, generator=generator)[: self.num_samples].sort().values
        return windows[chosen]

    def batches(self, tokenizer: Any) -> list[torch.Tensor]:
        """The windows in batches of `batch_size` rows (the last one may be shorter)."""
        return list(torch.split(self.token_windows(tokenizer), self.batch_size))
