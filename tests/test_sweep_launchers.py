"""Sweeps through submitit, as on a cluster: the local executor runs a two-job multirun end to end (job folders,
the sweep summary, a failed job reported while the other finishes); the SLURM launcher composes with the job
resources in config."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
TEXT = "\n".join(
    f"Line {i}: the elastic super-network shares its weights with sub-network {i % 7}." for i in range(300)
)


def test_submitit_local_sweep_runs_jobs_and_reports_a_failed_one(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "nas.search", "-m", "hydra/launcher=local",
        "model=tiny_llama", "objective=perplexity_vs_params", f"perplexity.text_file={text}", "perplexity.max_tokens=512",
        "search=nsga2", "search.population_size=3", "search.progress=false", "wandb.mode=disabled",
        "search.n_trials=4,2", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode != 0 and "below search.population_size" in done.stderr  # Hydra re-raises at the end
    assert (sweep / ".submitit").is_dir()  # the jobs went through submitit
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.split("_", 1)[0] for j in jobs] == ["0", "1"]
    with (sweep / "sweep_summary.csv").open() as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert rows[jobs[0]]["status"] == "completed" and rows[jobs[0]]["evaluations"] == "4"
    assert json.loads((sweep / jobs[0] / "summary.json").read_text())["evaluations"] == 4
    assert rows[jobs[1]]["status"] == "failed" and "below search.population_size" in rows[jobs[1]]["error"]


def test_slurm_launcher_takes_its_resources_from_config():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="pipeline",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.mem_gb) == ("gpu", 4, 720, 64)
    assert launcher.array_parallelism == 16
