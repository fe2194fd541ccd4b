"""Freed host memory is kept for reuse: repeated large allocations stop faulting in fresh pages."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from nas.cli import CONFIG_DIR

ENTRY_CONFIGS = (
    "analyze",
    "baselines",
    "evaluate",
    "export",
    "overview",
    "pick",
    "pipeline",
    "reorder",
    "search",
    "train",
)

# Run apart: the allocator's settings are the whole process's, and the test suite's must stay as they are.
# The fewest faults of five rounds: the kernel may reclaim idle free pages now and then (DAMON here).
PROBE = """
import sys, torch
from nas.io.host_memory import keep_freed_memory, page_faults
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def work():
    for numel in (1_500_000, 12_500_000, 60_000_000):  # 6 MB, 50 MB, 240 MB (logits-sized)
        a = torch.empty(numel).fill_(1.0)
        b = a * 2
        del a, b
work()
counts = []
for _ in range(5):
    before = page_faults()
    work()
    counts.append(page_faults() - before)
print(min(counts))
"""


def faults_per_round(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_kept_freed_memory_ends_the_page_faults_of_repeated_large_allocations():
    assert faults_per_round("default") > 50_000  # the 50 and 240 MB blocks: fresh mmaps each time
    assert faults_per_round("keep") < 100


def test_every_entry_config_keeps_freed_memory_and_can_turn_it_off():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in ENTRY_CONFIGS:
            assert compose(config_name=name).host.keep_freed_memory is True, name
        assert compose(config_name="search", overrides=["host.keep_freed_memory=false"]).host.keep_freed_memory is False
