"""Folder names of multirun jobs: `<n>_<overrides>`, made safe to be one folder.

Hydra's `override_dirname` is the overrides as typed; a path value (`data.path=/data/x.json`) would make
nested folders (and hide the job from the sweep summary), and many overrides exceed the file system's
255-byte limit. `JobFolders`, a Hydra callback, registers the `nas_folder_name` resolver that
`conf/hydra/default.yaml` applies to it before the first job's folder is made.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

RESOLVER = "nas_folder_name"
MAX_CHARS = 120


def folder_name(text: str) -> str:
    """`text` as one folder name: separators replaced, long names cut and made unique with a short hash."""
    name = str(text).replace("/", "_").replace("\\", "_").lstrip(".") or "default"
    if len(name) > MAX_CHARS:
        name = f"{name[: MAX_CHARS - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


class JobFolders(Callback):
    """Registers the resolver when a sweep (or a run) starts, not when this module is imported."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        OmegaConf.register_new_resolver(RESOLVER, folder_name, replace=True)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        OmegaConf.register_new_resolver(RESOLVER, folder_name, replace=True)
