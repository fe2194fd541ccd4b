"""What every command-line entry point shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nas.errors import NASError

# Absolute, so entry points also work when their `main` is imported (console scripts, tests).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def nas_error_behind(exc: BaseException | None) -> NASError | None:
    """The `NASError` behind `exc`, following `raise ... from` links (Hydra wraps errors it builds)."""
    while exc is not None:
        if isinstance(exc, NASError):
            return exc
        exc = exc.__cause__
    return None


@contextmanager
def exit_on_nas_error() -> Iterator[None]:
    """End the run with our own errors' one clear message, not a traceback from deep in a library."""
    try:
        yield
    except Exception as exc:
        cause = nas_error_behind(exc)
        if cause is None:
            raise
        raise SystemExit(f"Error: {cause}") from None
