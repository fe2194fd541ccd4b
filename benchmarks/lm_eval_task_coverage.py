"""How many of lm-eval's task names `task=<name>` accepts: every task of its index by output type, groups and tags.

Run: `.venv/bin/python benchmarks/lm_eval_task_coverage.py`

A task is scored here when its output type is one of lm-eval's four (`multiple_choice`, `loglikelihood`,
`loglikelihood_rolling`, `generate_until`) and it takes no image or audio input. Whether a given task then runs
also depends on its dataset being reachable (offline: a local copy, `task.<name>.datasets`) and on the Python
extras some tasks import (their own `utils.py`); this script reads the YAMLs only and builds no task.
"""

from __future__ import annotations

from collections import Counter

from lm_eval.tasks._index import Kind
from lm_eval.tasks._yaml_loader import load_yaml

from nas.evaluation.lm_eval_tasks import LM_EVAL_VERSION, builtin_index
from nas.evaluation.task import REQUEST_TYPES

SCORED = ("multiple_choice", *REQUEST_TYPES)


def main() -> None:
    index = builtin_index()
    kinds = Counter(entry.kind for entry in index.values())
    types: Counter[str] = Counter()
    multimodal = unreadable = 0
    for entry in index.values():
        if entry.kind is not Kind.TASK or entry.yaml_path is None:
            continue
        try:
            config = load_yaml(entry.yaml_path, resolve_func=False, recursive=True)
        except Exception:
            unreadable += 1
            continue
        if config.get("doc_to_image") or config.get("doc_to_audio"):
            multimodal += 1
            continue
        types[str(config.get("output_type", "generate_until"))] += 1
    scored = sum(n for t, n in types.items() if t in SCORED)
    print(f"lm-eval {LM_EVAL_VERSION}: {len(index)} names")
    print(
        f"  YAML tasks {kinds[Kind.TASK]}, Python tasks {kinds[Kind.PY_TASK]}, groups {kinds[Kind.GROUP]}, tags {kinds[Kind.TAG]}"
    )
    for output_type, count in types.most_common():
        print(f"  {output_type:24} {count:6d}{'' if output_type in SCORED else '  (not scored here)'}")
    print(f"  multimodal (image/audio) {multimodal:6d}  (not scored here)")
    print(f"  unreadable YAML          {unreadable:6d}")
    print(
        f"YAML tasks with an output type scored here: {scored}; plus {kinds[Kind.GROUP]} groups and "
        f"{kinds[Kind.TAG]} tags over them"
    )


if __name__ == "__main__":
    main()
