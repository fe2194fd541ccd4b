"""`hydra.utils.instantiate` that lets this project's own errors through unwrapped."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from nas.errors import nas_error_behind


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the object a `_target_` config describes.

    Hydra wraps every exception raised while building in an `InstantiationException`; ours already
    say what to fix, so they are re-raised as they are.
    """
    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as exc:
        cause = nas_error_behind(exc)
        if cause is not None:
            raise cause from None
        raise
