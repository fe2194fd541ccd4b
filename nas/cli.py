"""What every command-line entry point shares: where the configs are, one clear line for our errors, and
`hydra_main`, which makes an entry point's `main` out of the job it runs."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nas.errors import OutputWriteError, nas_error_behind
from nas.io.atomic import disk_full
from nas.io.host_memory import apply_host_settings
from nas.io.locations import config_dir

# Absolute, so entry points also work when their `main` is imported (console scripts, tests), and found
# in a repository checkout or an installed wheel alike.
CONFIG_DIR = str(config_dir())


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


def hydra_main(config_name: str, job: str, entry_module: str) -> Callable[[], None]:
    """The `main()` of an entry point: Hydra composes `conf/<config_name>.yaml` from the command line, the
    job runs with it and the run directory, and our own errors end the run with one line.

    Args:
        config_name: the entry config in `conf/`.
        job: `"module:function"` of the stage or job, called as `function(cfg, run_dir)`; imported only
            when it runs, so `--help` and tab completion answer without loading torch and transformers.
        entry_module: the entry point's module (`nas.train`); Hydra names the job and its log after it.
    """

    def task(cfg: DictConfig) -> None:
        module, _, function = job.partition(":")
        with exit_on_nas_error():
            apply_host_settings(cfg)
            getattr(importlib.import_module(module), function)(cfg, HydraConfig.get().runtime.output_dir)

    task.__module__ = entry_module
    task.__qualname__ = task.__name__ = "main"
    hydra_entry = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(task)

    def main() -> None:
        check_group_options(sys.argv[1:])
        hydra_entry()

    return main


# Config groups whose options are not all files in conf/ (hydra_plugins/nas_experiments/lm_eval_tasks.py).
OPEN_GROUPS = ("task",)


def check_group_options(arguments: list[str]) -> None:
    """End the run with one line when a command-line override picks options a config group does not have.

    Hydra lists the options of a group chosen once (`search=nsga3`), but for a list (`'baseline=[a,b]'`)
    it only says it could not load one; both get the same answer here, before anything is composed. The `task`
    group is open: any lm-eval task name is an option (checked against lm-eval's index when the task is built).
    """
    root = Path(CONFIG_DIR)
    for argument in arguments:
        key, sep, value = argument.partition("=")
        group = key.lstrip("+~").split("@")[0]
        if not sep or not group or "." in group or "(" in value or not (root / group).is_dir() or group in OPEN_GROUPS:
            continue
        names = [v.strip(" '\"") for v in value.strip("[]").replace(",", " ").split()]
        available = sorted(p.stem for p in (root / group).glob("*.yaml"))
        unknown = [n for n in names if n and n != "null" and n not in available]
        if unknown:
            raise SystemExit(f"Error: unknown {group} option(s) {unknown}; available: {', '.join(available)}.")
