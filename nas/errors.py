"""Exceptions with messages that say what is wrong and how to fix it."""

from __future__ import annotations


class NASError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidSubNetworkError(NASError, ValueError):
    """A sub-network that the model or the search space cannot hold."""


class SearchSpaceError(NASError, ValueError):
    """A search-space configuration that cannot be resolved against the model."""


class ModelLoadError(NASError, RuntimeError):
    """A model name, folder or file that cannot be loaded."""


class UnsupportedModelError(NASError, TypeError):
    """A model architecture whose module tree the elastic layers do not know."""


class DataNotFoundError(NASError, FileNotFoundError):
    """A dataset file that is not where the configuration says it is."""


class SearchConfigError(NASError, ValueError):
    """A search configuration (objectives, budget, storage, study) that cannot run as given."""


class OutputWriteError(NASError, OSError):
    """An output that could not be written (full disk, read-only folder); earlier outputs are intact."""


class OutputFolderError(NASError, FileExistsError):
    """An output folder that holds files this project did not write (they are never deleted)."""


def nas_error_behind(exc: BaseException | None) -> NASError | None:
    """The `NASError` behind `exc`, following `raise ... from` links (Hydra wraps errors it builds)."""
    while exc is not None:
        if isinstance(exc, NASError):
            return exc
        exc = exc.__cause__
    return None
