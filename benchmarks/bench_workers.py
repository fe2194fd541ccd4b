"""Search throughput with 1, 2 and 3 independent workers on SQLite and on PostgreSQL, and the storage's share.

Each worker is its own `nas.search` process (own run directory, the storage URL shared), on the tiny model (Klein's
space: 120 distinct sub-networks) with a cheap objective (perplexity of 1,024 tokens vs parameters), random search. Printed per engine and worker count:
real evaluations per minute (first trial's start to last trial's end), the mean evaluation time, and the time
spent inside the storage (Optuna's RDB storage methods, timed in every worker's search loop: not its start-up
or its outputs) per evaluation, as a share of an evaluation. Needs Debian's `postgresql` binaries for the PostgreSQL rows (`make test` installs them). Run alone:
on a 2-core machine anything else skews the timings.

    .venv/bin/python benchmarks/bench_workers.py --workers 1,2,3 --trials 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

WORKER = textwrap.dedent(
    """
    import functools, json, sys, time
    sys.path.insert(0, {tests!r})
    from optuna.storages._rdb.storage import RDBStorage
    spent = [0.0, 0]

    def timed(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
                spent[1] += 1
        return wrapper

    for name, member in list(vars(RDBStorage).items()):
        if callable(member) and not name.startswith("_"):
            setattr(RDBStorage, name, timed(member))

    from test_search_job import compose_search
    import nas.stages.search as stage
    from nas.stages.search import run_search

    loop = stage.run_worker

    def counted_loop(*args, **kwargs):  # storage time of the worker loop only (not start-up, not outputs)
        spent[0], spent[1] = 0.0, 0
        try:
            return loop(*args, **kwargs)
        finally:
            spent.extend(spent[:2])

    stage.run_worker = counted_loop
    from nas.search.study import worker_id
    run_search(compose_search({overrides!r}), {out!r})
    print("RESULT " + json.dumps({{"storage_s": spent[2], "calls": spent[3], "worker": worker_id()}}))
    """
)
TEXT = "\n".join(
    f"Line {i}: the elastic super-network shares its weights with sub-network {i % 7}." for i in range(300)
)


def overrides(tmp: Path, url: str, trials: int, out: Path) -> list[str]:
    text = tmp / "text.txt"
    text.write_text(TEXT)
    return [
        "model=tiny_llama",
        "search_space=klein",  # 120 distinct sub-networks on the tiny model
        "objective=perplexity_vs_params",
        f"perplexity.text_file={text}",
        "perplexity.max_tokens=1024",
        "perplexity.seq_len=128",
        "search=random",
        f"search.n_trials={trials}",
        "search.progress=false",
        "wandb.mode=disabled",
        f"search.storage={url}",
        f"paths.output_dir={out}",
    ]


def run(url: str, workers: int, trials: int, tmp: Path) -> dict[str, float]:
    procs = []
    for i in range(workers):
        code = WORKER.format(
            tests=str(ROOT / "tests"), overrides=overrides(tmp, url, trials, tmp / f"w{i}"), out=str(tmp / f"w{i}")
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=1800)
        assert p.returncode == 0, out[-2000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    study = optuna.load_study(study_name="random-seed0", storage=url)
    done = [t for t in study.trials if t.user_attrs.get("evaluated")]
    assert len(done) == trials, len(done)
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    minutes = (last - first).total_seconds() / 60
    evaluation = sum(t.user_attrs["seconds"] for t in done) / len(done)
    storage = sum(r["storage_s"] for r in results) / len(done)
    return {
        "per_minute": len(done) / minutes,
        "evaluation_s": evaluation,
        "storage_s": storage,
        "share": storage / evaluation,
        "calls": sum(r["calls"] for r in results) / len(done),
        "trials_stored": len(study.trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    server = None
    if "postgresql" in args.engines:
        from postgres import start_postgres

        server = start_postgres()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {args.trials} evaluations per run, random search")
    print(
        f"{'engine':<12}{'workers':>8}{'eval/min':>10}{'eval s':>9}{'storage s/eval':>16}{'share':>8}{'calls/eval':>12}{'trials':>8}"
    )
    try:
        for engine in args.engines.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    if engine == "sqlite":
                        url = f"sqlite:///{Path(tmp) / 'study.db'}"
                    else:
                        assert server is not None
                        url = server.url(server.create_database(), with_password=True)
                    r = run(url, workers, args.trials, Path(tmp))
                print(
                    f"{engine:<12}{workers:>8}{r['per_minute']:>10.1f}{r['evaluation_s']:>9.3f}{r['storage_s']:>16.4f}"
                    f"{r['share'] * 100:>7.1f}%{r['calls']:>12.1f}{r['trials_stored']:>8}"
                )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
