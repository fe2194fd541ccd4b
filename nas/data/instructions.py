"""Alpaca-format instruction data: the Stanford Alpaca prompt, loss on the response tokens only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from nas.data.paths import resolve_data_dir
from nas.errors import DataNotFoundError, NASError

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
IGNORE_INDEX = -100  # label value that cross-entropy skips


class DataFormatError(NASError, ValueError):
    """A data file whose records lack the fields the format needs."""


def alpaca_prompt(record: dict[str, Any]) -> str:
    """The Stanford Alpaca prompt of one record (with or without its `input`)."""
    template = PROMPT_WITH_INPUT if str(record.get("input") or "").strip() else PROMPT_NO_INPUT
    return template.format(instruction=record["instruction"], input=record.get("input") or "")


def load_alpaca_records(source: str, path: str | None, hub_id: str, data_dir: str | None) -> list[dict[str, Any]]:
    """Records from a local JSON list (`source=local`), the hub (`source=hub`), or local-else-hub (`auto`).

    With `auto`, only a missing default file (`<data_dir>/alpaca/alpaca_en_demo.json`) falls back to the
    hub; a `path` given explicitly must exist, whatever the source.
    """
    if source not in ("local", "hub", "auto"):
        raise DataFormatError(f"data.source={source!r}: use local, hub or auto.")
    if path and source != "hub":
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataNotFoundError(f"data.path={path}: no such file ({file.resolve()}); give an existing JSON file.")
        return _read_json_records(file)
    if source in ("local", "auto"):
        default: Path | None = None
        try:
            default = resolve_data_dir(data_dir) / "alpaca" / "alpaca_en_demo.json"
        except DataNotFoundError:
            if source == "local":
                raise
        if default is not None and default.is_file():
            return _read_json_records(default)
        if source == "local":
            raise DataNotFoundError(f"No instruction data at {default}; set data.path=<file.json> or paths.data_dir.")
    import datasets  # only users online get here

    records = [dict(r) for r in datasets.load_dataset(hub_id, split="train")]
    check_records(records, hub_id)
    return records


def _read_json_records(file: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{file} is not valid JSON (line {exc.lineno}): {exc.msg}.") from exc
    if not isinstance(records, list) or not records:
        raise DataFormatError(f"{file} must hold a non-empty JSON list of records.")
    check_records(records, str(file))
    return records


def check_records(records: Sequence[Any], source: str) -> None:
    """Every record has `instruction` and `output` as text (and `input`, when present, as text or null).

    A null or numeric field would otherwise be trained on as the text "None" or "3".
    """
    for number, record in enumerate(records):
        missing = [k for k in ("instruction", "output") if not isinstance(record, dict) or k not in record]
        if missing:
            raise DataFormatError(
                f"{source}, record {number}: missing {missing}; Alpaca records need instruction and output."
            )
        wrong = [k for k in ("instruction", "output") if not isinstance(record[k], str)]
        if record.get("input") is not None and not isinstance(record["input"], str):
            wrong.append("input")
        if wrong:
            found = ", ".join(f"{k}={record[k]!r}" for k in wrong)
            raise DataFormatError(
                f"{source}, record {number}: {found}; instruction and output must be text (input text or null). "
                "Fix or drop that record."
            )


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]


def tokenize_record(
    record: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int, train_on_prompt: bool
) -> TokenizedExample:
    """Prompt + response + EOS, truncated; prompt tokens masked out of the loss unless `train_on_prompt`."""
    prompt_ids = tokenizer(alpaca_prompt(record), add_special_tokens=True).input_ids
    response_ids = tokenizer(str(record["output"]), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    labels = ids.copy() if train_on_prompt else ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return TokenizedExample(ids, labels)


def pack(examples: Sequence[TokenizedExample], length: int) -> list[TokenizedExample]:
    """Concatenate examples into sequences of exactly `length` tokens (the last partial one dropped).

    Packing wastes no compute on padding; tokens may attend across example boundaries, as in the
    usual simple packing.
    """
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        ids += example.input_ids
        labels += example.labels
    return [
        TokenizedExample(ids[i : i + length], labels[i : i + length]) for i in range(0, len(ids) - length + 1, length)
    ]


def collate(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked from attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
