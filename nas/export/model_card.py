"""The model card (`README.md`) written beside a deployed sub-network: what it is, where it came from, what it
costs and how well it scores, with the numbers the pick measured and the command that produced it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from nas.supernet.subnetwork import SubNetwork


@dataclass(frozen=True)
class ScoreLine:
    """One task's (or the pick metric's) score on the card."""

    name: str
    value: float
    low: float | None
    high: float | None
    n: int | None
    source: str  # "held-out items" | "search items"
    percent: bool = True  # a proportion shown in percent (accuracy); False: as it is (perplexity)


@dataclass
class CardFacts:
    """Everything the card states; each field is measured or read, never assumed."""

    title: str
    base_model: str
    license: str
    sub: SubNetwork
    architecture: str
    params: int
    footprints: dict[str, float]  # format -> GB
    files: dict[str, float]  # written file or folder -> GB on disk
    speed: Mapping[str, Any] | None
    hardware: str
    scores: Sequence[ScoreLine]
    metric: str
    budget: Mapping[str, float]
    decision: str
    command: str
    config_yaml: str
    load_snippet: str
    trial: int | None = None
    study: str | None = None
    notes: list[str] = field(default_factory=list)


def hardware_description(device: str | torch.device = "cpu") -> str:
    """The device speed was measured on: GPU name, or CPU model, cores and torch threads."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def package_license(package: str) -> str | None:
    """The license an installed package declares (the embedded model's package, say)."""
    try:
        meta = importlib.metadata.metadata(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None
    fields = cast(Any, meta)  # an email.message.Message: .get exists, the typing protocol lacks it
    return fields.get("License-Expression") or fields.get("License") or None


def folder_license(folder: str | Path) -> str | None:
    """The `license:` of a model folder's own card front matter, when it has one."""
    card = Path(folder).expanduser() / "README.md"
    if not card.is_file():
        return None
    lines = card.read_text(errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _score_rows(scores: Sequence[ScoreLine]) -> list[str]:
    rows = ["| task or objective | score | 95% interval | items | measured on |", "|---|---|---|---|---|"]
    for s in scores:
        shown = _pct if s.percent else (lambda v: "-" if v is None else f"{v:.4g}")
        interval = "-" if s.low is None or s.high is None else f"[{shown(s.low)}, {shown(s.high)}]"
        unit = " %" if s.percent else ""
        rows.append(f"| {s.name} | {shown(s.value)}{unit} | {interval} | {s.n if s.n else '-'} | {s.source} |")
    return rows


def _front_matter(facts: CardFacts) -> list[str]:
    license_id = facts.license if " " not in facts.license else "other"
    return ["---", f"license: {license_id}", f"base_model: {facts.base_model}", "tags: [nas, pruned, llama]", "---"]


def render(facts: CardFacts) -> str:
    """The card as Markdown (with Hugging Face front matter)."""
    sub = facts.sub
    lines = [*_front_matter(facts), "", f"# {facts.title}", ""]
    lines += [
        f"A sub-network of **{facts.base_model}** found by one-shot neural architecture search "
        f"(study `{facts.study}`, trial {facts.trial}), chosen by `python -m nas.pick`: {facts.decision}",
        "",
        f"- Base model: {facts.base_model} (license: {facts.license}; this derivative is under the same terms).",
        f"- Architecture: `{facts.architecture}`, {sub.num_layers} decoder layers, hidden size {sub.hidden_size}.",
        f"- Parameters: {facts.params:,}.",
        "",
        "## Sub-network",
        "",
        "| position | source layer | MLP width | query heads |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {i} | {layer} | {m} | {h} |"
        for i, (layer, m, h) in enumerate(zip(sub.layers, sub.mlp_sizes, sub.num_heads))
    ]
    lines += ["", "## Footprint", "", "| format | size (MB) |", "|---|---|"]
    lines += [f"| {fmt} | {gb * 1000:.1f} |" for fmt, gb in facts.footprints.items()]
    if facts.files:
        lines += [
            "",
            "Written here: " + ", ".join(f"`{name}` {gb * 1000:.1f} MB" for name, gb in facts.files.items()) + ".",
        ]
    lines += ["", "## Speed", ""]
    if facts.speed:
        s = facts.speed
        lines += [
            f"Measured by the pick on {facts.hardware}, the model as exported (before GGUF conversion), batch "
            f"{s['batch_size']}, {s['prompt_len']}-token prompt, {s['new_tokens']} new tokens, median of {s['repeats']} runs:",
            "",
            f"- prefill: {s['prefill_tokens_per_s']:.1f} tokens/s",
            f"- decode: {s['decode_tokens_per_s']:.1f} tokens/s ({s['latency_ms']:.2f} ms per decode step)",
        ]
    else:
        lines.append("Not measured (speed=null).")
    lines += ["", "## Scores", "", f"Picked by `{facts.metric}`.", "", *_score_rows(facts.scores)]
    lines += ["", "## Budget", ""]
    lines += [f"- {k}: {v:g}" for k, v in facts.budget.items()] or ["- none"]
    if facts.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in facts.notes]]
    lines += ["", "## Use", "", "```python", facts.load_snippet, "```"]
    lines += ["", "## Reproduce", "", "```bash", facts.command, "```", "", "Resolved settings of the pick:", ""]
    lines += ["```yaml", facts.config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def write_card(facts: CardFacts, folder: str | Path) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render(facts))
    return path
