"""What a search optimises: objectives parsed from config, each with a kind, a direction and options.

    objectives:
      - {kind: accuracy, task: arc_easy}        # the task's search metric (acc_norm for ARC), maximised
      - {kind: size_gb, dtype: fp16}            # model size at a storage precision, minimised

Kinds: `accuracy` (one task, or the mean over a list of tasks; `metric` overrides the task's own),
`perplexity` (the `perplexity` config), `params`, `size_gb` (`dtype` fp32|fp16|bf16|int8), `flops`
(per token), `latency` (ms per decoded token, or per prefill batch with `mode: prefill`) and
`throughput` (tokens/s, `mode: prefill|decode`). The analytic ones (params, size_gb, flops) cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from nas.errors import SearchConfigError

# Kind -> (natural direction, default hypervolume bound relative to the reference model's value).
# The bound is the worst value that still counts: sub-networks larger or slower than the model
# itself, or with zero accuracy, or with ten times its perplexity, add no hypervolume.
KINDS: dict[str, tuple[str, float]] = {
    "accuracy": ("maximize", 0.0),
    "perplexity": ("minimize", 10.0),
    "params": ("minimize", 1.0),
    "size_gb": ("minimize", 1.0),
    "flops": ("minimize", 1.0),
    "latency": ("minimize", 1.0),
    "throughput": ("maximize", 1.0),
}
ANALYTIC = frozenset({"params", "size_gb", "flops"})
SPEED = frozenset({"latency", "throughput"})  # measured with the speed meter
DTYPES = ("fp32", "fp16", "bf16", "int8")
MODES = ("prefill", "decode")
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Objective:
    """One objective of a study.

    Attributes:
        kind: one of `KINDS`.
        direction: minimize or maximize (the kind's natural one unless set, and it must agree).
        tasks: accuracy: the task names whose scores are averaged.
        metric: accuracy: a metric to use instead of each task's own search metric (e.g. acc).
        dtype: size_gb: the storage precision.
        mode: latency/throughput: prefill or decode.
        hv_bound: the hypervolume reference point for this objective, relative to the reference model.
    """

    kind: str
    direction: str
    tasks: tuple[str, ...] = ()
    metric: str | None = None
    dtype: str = "fp16"
    mode: str = "decode"
    hv_bound: float = 1.0

    @property
    def name(self) -> str:
        """A short, unique column name: `arc_easy`, `mean(arc_easy,piqa).acc`, `size_gb_fp16`, ..."""
        if self.kind == "accuracy":
            base = self.tasks[0] if len(self.tasks) == 1 else f"mean({','.join(self.tasks)})"
            return f"{base}.{self.metric}" if self.metric else base
        if self.kind == "size_gb":
            return f"size_gb_{self.dtype}"
        if self.kind in SPEED:
            return f"{self.kind}_{self.mode}"
        return self.kind

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @property
    def analytic(self) -> bool:
        return self.kind in ANALYTIC

    @property
    def is_speed(self) -> bool:
        """Measured with the speed meter (latency or throughput)."""
        return self.kind in SPEED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tasks": list(self.tasks), "name": self.name}


def _fail(index: int, message: str) -> SearchConfigError:
    return SearchConfigError(f"objectives[{index}]: {message}")


def parse_objective(index: int, spec: Any) -> Objective:
    """One entry of `objectives`: a mapping, or just a kind name."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise _fail(index, f"expected a mapping like {{kind: accuracy, task: arc_easy}}, got {spec!r}.")
    allowed = {"kind", "direction", "task", "metric", "dtype", "mode", "hv_bound"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise _fail(index, f"unknown keys {unknown}; allowed: {sorted(allowed)}.")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _fail(index, f"unknown objective kind {kind!r}; available: {sorted(KINDS)}.")
    natural, bound = KINDS[kind]
    direction = spec.get("direction") or natural
    if direction not in DIRECTIONS:
        raise _fail(index, f"direction {direction!r} is not one of {list(DIRECTIONS)}.")
    if direction != natural:
        raise _fail(
            index,
            f"{kind} is to {natural}; direction={direction} would search for the worst sub-networks. "
            f"Drop `direction` or set it to {natural}.",
        )
    task = spec.get("task")
    tasks: tuple[str, ...] = ()
    if kind == "accuracy":
        if not task:
            raise _fail(index, "an accuracy objective needs a task, e.g. {kind: accuracy, task: arc_easy}.")
        tasks = (task,) if isinstance(task, str) else tuple(str(t) for t in task)
    elif task is not None or spec.get("metric") is not None:
        raise _fail(index, f"`task` and `metric` belong to accuracy objectives, not to {kind}.")
    dtype = spec.get("dtype") or "fp16"
    if dtype not in DTYPES:
        raise _fail(index, f"dtype {dtype!r} is not one of {list(DTYPES)}.")
    mode = spec.get("mode") or ("prefill" if kind == "throughput" else "decode")
    if mode not in MODES:
        raise _fail(index, f"mode {mode!r} is not one of {list(MODES)}.")
    hv_bound = float(spec["hv_bound"]) if spec.get("hv_bound") is not None else bound
    return Objective(kind, direction, tasks, spec.get("metric"), dtype, mode, hv_bound)


def parse_objectives(cfg: Sequence[Any] | ListConfig | DictConfig | None) -> list[Objective]:
    """The study's objectives, checked: at least two, all distinct."""
    if isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if isinstance(cfg, Mapping):  # also accept {name: spec} so single entries can be overridden
        cfg = list(cfg.values())
    if not cfg or len(cfg) < 2:
        raise SearchConfigError(
            "A multi-objective search needs at least two objectives, e.g. "
            "objectives='[{kind: accuracy, task: arc_easy}, {kind: size_gb}]'; "
            f"got {cfg!r}. Available kinds: {sorted(KINDS)}."
        )
    objectives = [parse_objective(i, spec) for i, spec in enumerate(cfg)]
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise SearchConfigError(f"Objectives must differ; got {names}.")
    return objectives


def task_names(objectives: Sequence[Objective]) -> list[str]:
    """Every task the objectives read, in order of first use."""
    return list(dict.fromkeys(t for o in objectives for t in o.tasks))
