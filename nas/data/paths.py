"""Where the offline data lives: `paths.data_dir`, else `$NAS_DATA_DIR`, else `../shared/data` beside the project."""

from __future__ import annotations

import os
from pathlib import Path

from nas.errors import DataNotFoundError
from nas.io.locations import project_root

SHARED_DATA_DIR = project_root().parent / "shared" / "data"


def resolve_data_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """The offline data folder, checked to exist; raises `DataNotFoundError` naming the setting to fix."""
    candidate = configured or os.environ.get("NAS_DATA_DIR")
    if candidate:
        path = Path(candidate).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"The data folder {path} does not exist; fix paths.data_dir or NAS_DATA_DIR.")
        return path
    if SHARED_DATA_DIR.is_dir():
        return SHARED_DATA_DIR
    raise DataNotFoundError(
        "No offline data folder: set NAS_DATA_DIR (or paths.data_dir=...) to a folder laid out like ../shared/data."
    )


def data_file(relative: str, configured: str | os.PathLike[str] | None = None) -> Path:
    """A file inside the data folder, e.g. `wikitext2/wiki.test.raw`, checked to exist."""
    path = resolve_data_dir(configured) / relative
    if not path.is_file():
        raise DataNotFoundError(f"Expected {path} (from the data folder); check paths.data_dir or NAS_DATA_DIR.")
    return path


def text_source(
    text_file: str | os.PathLike[str] | None, relative: str, data_dir: str | os.PathLike[str] | None, setting: str
) -> Path:
    """`text_file` when given (checked to exist; `setting` names its config key), else `relative` in the data folder."""
    if text_file is None:
        return data_file(relative, data_dir)
    path = Path(text_file).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"{setting}={text_file}: no such file.")
    return path
