"""Weights & Biases without the network when a run is offline.

`wandb` in offline mode still reports errors to its Sentry endpoint, which means a DNS look-up at the
end of every run (seen with strace: a query for W&B's API host). On a machine without internet
that is a stall or a refused connection; on any machine it is a call the user did not ask for.
"""

from __future__ import annotations

import os

MODES = ("disabled", "offline", "online")


def prepare_wandb(mode: str) -> str:
    """Check `mode` and set the environment for it before `wandb` starts; returns the mode.

    Offline and disabled runs get `WANDB_ERROR_REPORTING=false` (no Sentry), so they make no network call.
    """
    if mode not in MODES:
        raise ValueError(f"wandb mode {mode!r}: use one of {list(MODES)}.")
    if mode != "online":
        os.environ["WANDB_ERROR_REPORTING"] = "false"
    return mode
