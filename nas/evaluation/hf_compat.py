"""Names that moved between transformers 5.x releases: the KV cache argument and output field."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any


@cache
def _forward_takes_cache(cls: Any) -> bool:
    return "cache" in inspect.signature(cls.forward).parameters


def cache_kwargs(module: Any, kv_cache: Any) -> dict[str, Any]:
    """`{"cache": kv_cache}` for transformers >= 5.24 (`past_key_values` before, now deprecated)."""
    takes_cache = _forward_takes_cache(module.__class__)
    return {"cache" if takes_cache else "past_key_values": kv_cache}


def cache_of(output: Any) -> Any:
    """The KV cache of a model output (`cache`, formerly `past_key_values`)."""
    return output["cache"] if "cache" in output else output["past_key_values"]
