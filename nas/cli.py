"""What every command-line entry point shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nas.errors import NASError, OutputWriteError
from nas.io.atomic import disk_full

# Absolute, so entry points also work when their `main` is imported (console scripts, tests).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def nas_error_behind(exc: BaseException | None) -> NASError | None:
    """The `NASError` behind `exc`, following `raise ... from` links (Hydra wraps errors it builds)."""
    while exc is not None:
        if isinstance(exc, NASError):
            return exc
        exc = exc.__cause__
    return None


def in_multirun() -> bool:
    """Whether this is one job of a Hydra multirun (`-m`, or `hydra.mode: MULTIRUN`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def exit_on_nas_error() -> Iterator[None]:
    """End the run with our own errors' one clear message, not a traceback from deep in a library.

    In a multirun the error is raised instead, as the job's failure: exiting would end the whole sweep,
    while Hydra records a failed job, runs the others and reports the failure at the end.
    """
    # A log file that can no longer be written (a full disk) must not print a traceback per message.
    logging.raiseExceptions = False
    try:
        yield
    except Exception as exc:
        cause = nas_error_behind(exc)
        full = disk_full(exc)
        if full is not None and not isinstance(cause, OutputWriteError):
            cause = OutputWriteError(full)
        if cause is None:
            raise
        if in_multirun():
            raise cause from None
        raise SystemExit(f"Error: {cause}") from None
