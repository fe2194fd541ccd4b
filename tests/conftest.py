"""Shared fixtures: tiny random Llama models (fast) and the embedded SmolLM2-135M (slow)."""

from __future__ import annotations

import os

import pytest
import torch

# Two threads at most: the machine has two cores, and more only adds contention. Under pytest-xdist (`make test`
# runs a worker per core) each worker takes its share of the cores, and so do the processes its tests start.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(_THREADS)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))


@pytest.fixture(scope="module")
def tiny():
    """(elastic model, tokenizer): 4 layers, hidden 64, 4 heads in 2 KV groups, tied embeddings."""
    from nas import load_model

    return load_model("tiny_llama")


@pytest.fixture(scope="module")
def tiny_untied():
    from nas import load_model

    return load_model("tiny_llama", tie_word_embeddings=False, seed=1)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model (converted from GGUF once, then cached)."""
    from nas import load_model

    return load_model("smollm2_135m")


@pytest.fixture()
def tiny_inputs(tiny):
    _, tokenizer = tiny
    texts = ["The quick brown fox jumps over the lazy dog.", "Sub-networks share weights!"]
    return tokenizer(texts, return_tensors="pt", padding=True)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (tests/postgres.py); stopped and removed at the end."""
    import shutil

    from postgres import start_postgres

    server = start_postgres()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)
