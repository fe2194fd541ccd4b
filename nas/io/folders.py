"""Output folders written whole: built beside their target, then renamed into place.

An export (a model folder) is written into a hidden temporary sibling, `.<name>.partial-<pid>`, and
only renamed to its final name once complete, so a kill or a full disk leaves either the previous
export or nothing, never half a model. A folder is replaced only when it is one of ours: every entry
in it is listed in its manifest (`MANIFEST_FILE`), which each publication writes; anything else (a
user's files, the current directory) is refused before any work, with the fix in the message.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from nas.errors import OutputFolderError, OutputWriteError
from nas.io.atomic import disk_full_message, write_json

log = logging.getLogger(__name__)

# Lists every file a publication wrote; its presence marks the folder as ours to replace.
MANIFEST_FILE = ".nas_files.json"
_PARTIAL = ".partial-"
_RETIRED = ".retired-"


def is_ours(folder: Path) -> bool:
    """True when `folder` was published by `publish_folder` and holds nothing it did not write."""
    manifest = folder / MANIFEST_FILE
    try:
        listed = set(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    return present - {MANIFEST_FILE} <= listed


def check_output_folder(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any heavy work, a target that a publication could not or must not replace.

    Args:
        out_dir: the folder to create.
        overwrite: replace an earlier publication (only ever one of ours) in `out_dir`.

    Returns:
        The target as an absolute path.

    Raises:
        OutputFolderError: `out_dir` is a file, holds files we did not write, or holds an earlier
            export and `overwrite` is false.
        OutputWriteError: the folder that would hold `out_dir` is not writable.
    """
    target = Path(out_dir).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise OutputFolderError(f"out_dir={out_dir} is a file, not a folder; choose another out_dir.")
    if target.is_dir() and any(target.iterdir()):
        if not is_ours(target):
            raise OutputFolderError(
                f"out_dir={out_dir} ({target}) already holds files that this project did not write; they are "
                "never deleted. Choose another (empty or new) out_dir."
            )
        if not overwrite:
            raise OutputFolderError(
                f"out_dir={out_dir} holds an earlier export. Pass overwrite=true to replace it, or choose another out_dir."
            )
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    # The effective user is the one that will write (it differs from the real one under setuid or seteuid).
    effective = os.access in os.supports_effective_ids
    if not os.access(parent, os.W_OK | os.X_OK, effective_ids=effective):
        raise OutputWriteError(f"Cannot create out_dir={out_dir}: {parent} is not writable. Choose a writable out_dir.")
    return target


def _owner_alive(name: str) -> bool:
    """Whether the process that named a `.partial-<pid>-...` / `.retired-<pid>-...` folder still runs."""
    try:
        pid = int(name.rsplit(_PARTIAL if _PARTIAL in name else _RETIRED, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return True  # not a name we made: leave it alone
    return psutil.pid_exists(pid) and pid != os.getpid()


def _remove_leftovers(target: Path) -> None:
    """Temporary siblings of `target` left by a killed publication (their process is gone)."""
    for prefix in (f".{target.name}{_PARTIAL}", f".{target.name}{_RETIRED}"):
        for leftover in target.parent.glob(f"{prefix}*"):
            if leftover.is_dir() and not _owner_alive(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _reporting_disk_errors(target: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if isinstance(exc, OutputWriteError | OutputFolderError):
            raise
        raise OutputWriteError(disk_full_message(target / "...", exc)) from exc


def publish_folder(out_dir: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Create `out_dir` whole: `write(tmp)` fills a temporary sibling, which then replaces `out_dir`.

    Args:
        out_dir: the folder to create; an existing one must be empty, or one of ours with `overwrite`.
        write: fills the folder it is given (it exists and is empty).
        overwrite: replace an earlier publication in `out_dir`.

    Returns:
        `out_dir` as an absolute path. On any failure the earlier folder (if any) is left as it was
        and the temporary one removed.
    """
    target = check_output_folder(out_dir, overwrite)
    with _reporting_disk_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target)
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = target.parent / f".{target.name}{_PARTIAL}{token}"
        tmp.mkdir()
        try:
            write(tmp)
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir())
            write_json({"files": files}, tmp / MANIFEST_FILE)
            retired = None
            if target.exists():
                # Checked again now, in case the folder changed while we wrote (never delete foreign files).
                check_output_folder(target, overwrite)
                retired = target.parent / f".{target.name}{_RETIRED}{token}"
                target.rename(retired)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return target
