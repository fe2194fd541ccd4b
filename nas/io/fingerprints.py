"""Settings fingerprints: what a run or a stage was made with, and what changed since.

Used by the pipeline's stage records and by training's checkpoints, so that finished work is reused
only with the settings that produced it and a mismatch names the keys that differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` as plain JSON types (tuples to lists, unknown objects to text), as they are stored."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of `settings` (order of keys does not matter)."""
    return hashlib.sha256(json.dumps(plain(settings), sort_keys=True).encode()).hexdigest()[:16]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, child in value.items():
            out |= _flat(child, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def changed_settings(stored: Mapping[str, Any], now: Mapping[str, Any], limit: int = 8) -> list[str]:
    """`key: stored -> now` for every dotted key whose value differs (at most `limit`, then a count)."""
    old, new = _flat(plain(stored)), _flat(plain(now))
    missing = object()
    changes = [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]
    if len(changes) > limit:
        changes = [*changes[:limit], f"... and {len(changes) - limit} more"]
    return changes
