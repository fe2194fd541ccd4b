"""Finding the checkpoint to resume from, and refusing one that another run wrote.

Each training run records what defines it (model, data, space, strategy, sampler, optimiser,
precision, ...; not its length or logging) in `<run dir>/run.json`, beside its `checkpoints/`. `ckpt_path=last`
resumes the newest checkpoint among this run name's folders *of a run with the same settings*; a
checkpoint whose run had other settings is refused, naming the keys that differ.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas.errors import NASError
from nas.io.atomic import read_json, write_json
from nas.io.fingerprints import changed_settings, fingerprint, plain

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
# The config groups that decide what a checkpoint's weights and optimiser state mean.
IDENTITY_KEYS = (
    "model",
    "search_space",
    "strategy",
    "sampler",
    "data",
    "optim",
    "finetune",
    "epochs",
    "seed",
    "reorder",
    "calibration",
    "dimensions",
)
# Trainer settings a resumed run may change: its length, validation and logging cadence.
_TRAINER_FREE = {
    "max_steps",
    "max_epochs",
    "val_check_interval",
    "check_val_every_n_epoch",
    "limit_val_batches",
    "log_every_n_steps",
    "num_sanity_val_steps",
    "enable_progress_bar",
    "enable_model_summary",
}


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings that make two training runs the same run (a resumed one may only change the rest)."""

    def value(key: str) -> Any:
        node = cfg.get(key)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    identity = {key: value(key) for key in IDENTITY_KEYS}
    identity["trainer"] = {k: v for k, v in (value("trainer") or {}).items() if k not in _TRAINER_FREE}
    if isinstance(identity["model"], dict):
        identity["model"] = {k: v for k, v in identity["model"].items() if k != "device"}  # where, not what
    return plain(identity)


def record_run(output_dir: str | Path, identity: Mapping[str, Any]) -> Path:
    """Write `run.json` of this run (before its first checkpoint)."""
    record = {"fingerprint": fingerprint(identity), "settings": dict(identity)}
    return write_json(record, Path(output_dir) / RUN_FILE)


def _run_file(checkpoint_dir: Path) -> Path:
    """The record of the run whose `checkpoints/` folder this is."""
    return checkpoint_dir.parent / RUN_FILE


def _recorded(checkpoint: Path) -> dict[str, Any] | None:
    path = _run_file(checkpoint.parent)
    if not path.is_file():
        return None
    return read_json(path, "run record", f"delete {path} to resume without checking the settings")  # type: ignore[no-any-return]


def _refusal(checkpoint: Path, stored: Mapping[str, Any], identity: Mapping[str, Any]) -> NASError:
    changes = "; ".join(changed_settings(stored.get("settings", {}), identity))
    return NASError(
        f"The checkpoint {checkpoint} belongs to a run with other settings ({changes}). Resume with that run's "
        "settings, pass ckpt_path=<a .ckpt of a run with these settings>, or drop ckpt_path to start fresh."
    )


def resolve_ckpt_path(value: str | None, output_dir: str | Path, identity: Mapping[str, Any]) -> str | None:
    """`None`, an existing `.ckpt` path of a run with these settings, or for `last` the newest
    `checkpoints/last.ckpt` of such a run among this run's folder and its siblings (earlier runs of
    the same name).

    Args:
        value: the `ckpt_path` setting.
        output_dir: this run's folder.
        identity: this run's `run_identity`.

    Raises:
        NASError: no such checkpoint, or only checkpoints of runs with other settings (the message
            names the keys that differ).
    """
    if value in (None, "", "null"):
        return None
    wanted = fingerprint(identity)
    if value == "last":
        runs_root = Path(output_dir).resolve().parent
        found = sorted(
            (p.resolve() for p in runs_root.glob(f"**/{CHECKPOINT_DIR}/last.ckpt") if p.exists()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if not found:
            raise NASError(
                f"ckpt_path=last but no {CHECKPOINT_DIR}/last.ckpt under {runs_root} (earlier runs with this name); "
                "drop ckpt_path to start fresh, or pass ckpt_path=<file.ckpt>."
            )
        records = [(p, _recorded(p)) for p in found]
        matching = [p for p, r in records if r is not None and r.get("fingerprint") == wanted]
        if matching:
            return str(matching[0])
        newest, record = records[0]
        if record is None:
            raise NASError(
                f"ckpt_path=last: the newest checkpoint, {newest}, has no {RUN_FILE} saying which settings wrote it "
                "(an older version of this project), and no checkpoint of a run with these settings exists. Pass "
                "ckpt_path=<that file> to resume it anyway, or drop ckpt_path to start fresh."
            )
        raise _refusal(newest, record, identity)
    path = Path(value).expanduser()
    if not path.is_file():
        raise NASError(f"ckpt_path={value}: no such checkpoint file; use last or the path of a .ckpt file.")
    record = _recorded(path)
    if record is None:
        log.warning("%s has no %s beside it: its settings cannot be checked against this run's.", path, RUN_FILE)
    elif record.get("fingerprint") != wanted:
        raise _refusal(path, record, identity)
    return str(path)
