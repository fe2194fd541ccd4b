"""Finding the checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path

from nas.errors import NASError


def resolve_ckpt_path(value: str | None, output_dir: str | Path) -> str | None:
    """`None`, an existing `.ckpt` path, or for `last` the newest `checkpoints/last.ckpt` among this run's
    folder and its siblings (earlier runs of the same experiment name)."""
    if value in (None, "", "null"):
        return None
    if value == "last":
        runs_root = Path(output_dir).resolve().parent
        found = [p for p in runs_root.glob("**/checkpoints/last.ckpt") if p.exists()]
        if not found:
            raise NASError(
                f"ckpt_path=last but no checkpoints/last.ckpt under {runs_root} (earlier runs with this name); "
                "drop ckpt_path to start fresh, or pass ckpt_path=<file.ckpt>."
            )
        return str(max(found, key=lambda p: p.resolve().stat().st_mtime).resolve())
    path = Path(value).expanduser()
    if not path.is_file():
        raise NASError(f"ckpt_path={value}: no such checkpoint file; use last or the path of a .ckpt file.")
    return str(path)
