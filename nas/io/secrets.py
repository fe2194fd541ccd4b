"""Database passwords: taken from the environment, never written.

A storage URL should carry no password: give it in `NAS_STORAGE_PASSWORD` (or, for PostgreSQL, in
libpq's own `PGPASSWORD` or `~/.pgpass`, which the driver reads by itself), and `with_password` adds it
when the connection is made. A URL typed with its password anyway is moved out of the config at start-up
(`nas.io.redaction.RedactSecrets`, a Hydra callback: the password goes to `NAS_STORAGE_PASSWORD` for this
process and its workers), and `redact_url` / `redact` hide it in anything written or logged.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from hydra.experimental.callback import Callback

PASSWORD_ENV = "NAS_STORAGE_PASSWORD"
MASK = "***"
# scheme://user:password@host... ; the password runs up to the last "@" before the host part.
_URL_WITH_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<tail>@)")


def password_of(url: str) -> str | None:
    """The password written in `url`, if any (percent-decoded as SQLAlchemy reads it)."""
    match = _URL_WITH_PASSWORD.search(url)
    if match is None or not match.group("password") or match.group("password") == MASK:
        return None
    from urllib.parse import unquote

    return unquote(match.group("password"))


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`."""
    return _URL_WITH_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}{m.group('tail')}", url)


def strip_password(url: str) -> str:
    """`url` without its password (`user:secret@host` -> `user@host`)."""
    return _URL_WITH_PASSWORD.sub(lambda m: f"{m.group('head')[:-1]}{m.group('tail')}", url)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every URL password replaced by `***` (for logs, W&B, files)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def with_password(url: str) -> str:
    """The URL to connect with: `url` itself when it has a password or none is in the environment, else
    `url` with `NAS_STORAGE_PASSWORD` filled in (only ever in memory)."""
    secret = os.environ.get(PASSWORD_ENV)
    if not secret or password_of(url) is not None or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.username is None:
        return url  # no user to authenticate: nothing to add
    return parsed.set(password=secret).render_as_string(hide_password=False)


def _move_password_to_environment(url: str, where: str) -> str:
    """`url` without its password, which goes to `NAS_STORAGE_PASSWORD` for this process and its children."""
    secret = password_of(url)
    if secret is None:
        return url
    known = os.environ.get(PASSWORD_ENV)
    if known is not None and known != secret:
        raise ValueError(
            f"{where} carries a database password other than the one in ${PASSWORD_ENV}; give one password, "
            f"preferably only in ${PASSWORD_ENV} (or PGPASSWORD / ~/.pgpass for PostgreSQL), not in the URL."
        )
    os.environ[PASSWORD_ENV] = secret
    return strip_password(url)


class RedactSecrets(Callback):
    """Hydra callback (conf/hydra/default.yaml): before Hydra saves a run's config (`.hydra/*.yaml`),
    names a multirun's job folders or logs its overrides, every URL password in the config and in the
    command-line overrides moves to `NAS_STORAGE_PASSWORD`, and `sys.argv` (which W&B records) is
    redacted; what remains is written nowhere."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._strip(config)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._strip(config)

    def _strip(self, config: Any) -> None:
        from omegaconf import DictConfig, ListConfig, open_dict, read_write

        def walk(node: Any, path: str) -> None:
            if isinstance(node, DictConfig):
                keys: list[Any] = [str(k) for k in node]
            elif isinstance(node, ListConfig):
                keys = list(range(len(node)))
            else:
                return
            for key in keys:
                child: Any = node._get_node(key)
                if isinstance(child, DictConfig | ListConfig):
                    walk(child, f"{path}.{key}")
                    continue
                value = child._value() if child is not None else None
                if isinstance(value, str) and password_of(value) is not None:
                    node[key] = _move_password_to_environment(value, f"{path}.{key}".lstrip("."))

        # Tools that record the command line (W&B's run metadata) read sys.argv: it loses the password too.
        sys.argv[:] = [redact_url(arg) for arg in sys.argv]
        with read_write(config), open_dict(config):
            if "hydra" in config:
                with read_write(config.hydra), open_dict(config.hydra):
                    walk(config, "")
            else:
                walk(config, "")
