"""Prompts of lm-eval 0.4.13's multiple-choice tasks, rewritten as plain Python (no Jinja, no chat template).

Each `Prompt` mirrors one task YAML of `lm_eval/tasks/` (doc_to_text, doc_to_choice, doc_to_target,
description, target and few-shot delimiters) and turns a document into an `Item`: the
(context, continuation) pairs lm-eval would send to `loglikelihood`. `tests/test_eval_prompts.py`
checks every prompt against lm-eval's own `ConfigurableTask` on the same documents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Item:
    """One document as loglikelihood requests.

    Attributes:
        requests: (context, continuation) per choice, exactly as lm-eval builds them.
        choices: lm-eval's `doc_to_choice` strings; their lengths normalise `acc_norm`.
        gold: index of the correct choice.
        labels: for TruthfulQA MC2, 1 for every true choice (empty otherwise).
        group: the sub-task a document belongs to (MMLU subject), "" otherwise.
    """

    requests: tuple[tuple[str, str], ...]
    choices: tuple[str, ...]
    gold: int
    labels: tuple[int, ...] = ()
    group: str = ""


class Prompt:
    """lm-eval's plain-text multiple-choice prompt: description, few-shot examples, the question, " " + choice."""

    target_delimiter = " "
    fewshot_delimiter = "\n\n"

    def text(self, doc: Doc) -> str:
        raise NotImplementedError

    def choices(self, doc: Doc) -> list[str]:
        raise NotImplementedError

    def target(self, doc: Doc) -> int:
        raise NotImplementedError

    def description(self, doc: Doc) -> str:
        return ""

    def group(self, doc: Doc) -> str:
        return ""

    def labels(self, doc: Doc) -> tuple[int, ...]:
        return ()

    def solved(self, doc: Doc) -> str:
        """A few-shot example: the question, the target delimiter, its answer, the few-shot delimiter."""
        return self.text(doc) + self.target_delimiter + self.choices(doc)[self.target(doc)] + self.fewshot_delimiter

    def item(self, doc: Doc, shots: Sequence[Doc] = ()) -> Item:
        context = self.description(doc) + "".join(self.solved(s) for s in shots) + self.text(doc)
        choices = self.choices(doc)
        return Item(
            requests=tuple((context, self.target_delimiter + c) for c in choices),
            choices=tuple(choices),
            gold=self.target(doc),
            labels=self.labels(doc),
            group=self.group(doc),
        )


class ArcPrompt(Prompt):
    """tasks/arc/arc_easy.yaml (arc_challenge includes it)."""

    def text(self, doc: Doc) -> str:
        return f"Question: {doc['question']}\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return list(doc["choices"]["text"])

    def target(self, doc: Doc) -> int:
        return list(doc["choices"]["label"]).index(doc["answerKey"])


class MMLUPrompt(Prompt):
    """tasks/mmlu/default/_default_template_yaml and the per-subject descriptions."""

    def text(self, doc: Doc) -> str:
        a, b, c, d = doc["choices"]
        return f"{doc['question'].strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return ["A", "B", "C", "D"]

    def target(self, doc: Doc) -> int:
        return int(doc["answer"])

    def description(self, doc: Doc) -> str:
        subject = doc["subject"].replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}.\n\n"

    def group(self, doc: Doc) -> str:
        return str(doc["subject"])


def _hellaswag_clean(text: str) -> str:
    # tasks/hellaswag/utils.py::preprocess; brackets are artifacts of the WikiHow part of HellaSwag.
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


class HellaSwagPrompt(Prompt):
    """tasks/hellaswag/hellaswag.yaml with utils.process_docs."""

    def text(self, doc: Doc) -> str:
        context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return _hellaswag_clean(doc["activity_label"] + ": " + context)

    def choices(self, doc: Doc) -> list[str]:
        return [_hellaswag_clean(ending) for ending in doc["endings"]]

    def target(self, doc: Doc) -> int:
        return int(doc["label"])


class PiqaPrompt(Prompt):
    """tasks/piqa/piqa.yaml."""

    def text(self, doc: Doc) -> str:
        return f"Question: {doc['goal']}\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return [doc["sol1"], doc["sol2"]]

    def target(self, doc: Doc) -> int:
        return int(doc["label"])


class BoolQPrompt(Prompt):
    """tasks/super_glue/boolq/default.yaml."""

    def text(self, doc: Doc) -> str:
        return f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return ["no", "yes"]

    def target(self, doc: Doc) -> int:
        return int(doc["label"])


class WinograndePrompt(Prompt):
    """tasks/winogrande/default.yaml: one context per option (the sentence up to the blank, filled), one
    shared continuation (the rest of the sentence); only the continuation is scored ("partial scoring")."""

    def choices(self, doc: Doc) -> list[str]:
        blank = doc["sentence"].index("_")
        return [doc["sentence"][:blank] + option for option in (doc["option1"], doc["option2"])]

    def target(self, doc: Doc) -> int:
        return {"1": 0, "2": 1}[doc["answer"]]

    def continuation(self, doc: Doc) -> str:
        blank = doc["sentence"].index("_") + 1
        return doc["sentence"][blank:].strip()

    def solved(self, doc: Doc) -> str:
        return (
            self.choices(doc)[self.target(doc)]
            + self.target_delimiter
            + self.continuation(doc)
            + self.fewshot_delimiter
        )

    def item(self, doc: Doc, shots: Sequence[Doc] = ()) -> Item:
        prefix = "".join(self.solved(s) for s in shots)
        choices = self.choices(doc)
        continuation = self.target_delimiter + self.continuation(doc)
        return Item(tuple((prefix + c, continuation) for c in choices), tuple(choices), self.target(doc))


TRUTHFULQA_QA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)


class TruthfulQAPrompt(Prompt):
    """tasks/truthfulqa/truthfulqa_mc1.yaml and truthfulqa_mc2.yaml: a fixed 6-shot QA primer, then the question.

    Args:
        targets: "mc1_targets" (one true answer, listed first) or "mc2_targets" (several true answers).
    """

    def __init__(self, targets: str = "mc1_targets") -> None:
        if targets not in ("mc1_targets", "mc2_targets"):
            raise ValueError(f"TruthfulQAPrompt targets={targets!r}: use mc1_targets or mc2_targets.")
        self.targets = targets

    def text(self, doc: Doc) -> str:
        return TRUTHFULQA_QA_PRIMER + "\n\nQ: " + doc["question"] + "\nA:"

    def choices(self, doc: Doc) -> list[str]:
        return list(doc[self.targets]["choices"])

    def target(self, doc: Doc) -> int:
        return 0

    def labels(self, doc: Doc) -> tuple[int, ...]:
        return tuple(int(v) for v in doc[self.targets]["labels"]) if self.targets == "mc2_targets" else ()
