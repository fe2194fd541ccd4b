"""Driver of `test_a_full_disk_is_one_message_and_the_outputs_stay`, run inside a private mount namespace
on a small tmpfs at `argv[1]` (which it fills for real). Prints one JSON line with what it saw.

    python full_disk.py <disk folder> <search overrides...>
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from test_search_job import compose_search  # noqa: E402

from nas.stages.search import run_search  # noqa: E402

OUTPUTS = ("pareto.json", "summary.json", "trials.csv")


def read_outputs(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text() for name in OUTPUTS}


def main() -> None:
    disk, overrides = Path(sys.argv[1]), sys.argv[2:]
    out = disk / "run"
    run_search(compose_search([*overrides, "search.n_trials=3"]), out)
    before = read_outputs(out)
    # The command line, with the disk filling up after two more evaluations (see fill_disk_search.py).
    proc = subprocess.run(
        [
            sys.executable,
            str(TESTS / "scripts" / "fill_disk_search.py"),
            str(disk / "filler"),
            *overrides,
            "search.n_trials=8",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
    )
    after = read_outputs(out)
    os.remove(disk / "filler")
    summary = run_search(compose_search([*overrides, "search.n_trials=8"]), out)
    report = {
        "rc": proc.returncode,
        "stderr": proc.stderr,
        "same": before == after,
        "evaluations": summary["evaluations"],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
