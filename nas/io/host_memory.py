"""Host memory: have the C allocator keep the blocks torch frees, instead of handing them back to the OS.

A forward pass on CPU allocates and frees the same large activations again and again. glibc's malloc serves
a block above its mmap threshold (at most 32 MiB) with a fresh `mmap`, and gives freed memory at the top of
its heap back to the OS, so each forward touches new pages that the kernel faults in and zeroes one by one.
On SmolLM2-135M an 8x128 forward faulted in 49,000 pages (the 192 MiB of logits) each time: a cost
independent of the sub-network's size, which held exported speed-ups at 0.91-0.93 of the FLOPs reduction
(0.95-1.04 with it gone, two runs of 9 rounds, benchmarks/bench_supernet.py).
Keeping freed memory (every block from the heap, none of its own `mmap`, and the heap trimmed only past
2 GiB free) leaves the process at its peak resident size, which it reaches on every forward anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# No block of its own `mmap` (the logits of a batch are hundreds of MB, above any mmap threshold glibc
# allows), and the heap's free top trimmed only past 2 GiB (mallopt takes an int).
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}


def keep_freed_memory() -> bool:
    """Keep freed host memory for reuse from now on; False where the C library is not glibc (musl, macOS,
    Windows: their allocators have no such switch, and nothing changes)."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in KEEP.items())


def apply_host_settings(cfg: Any) -> None:
    """What the `host` config group asks of this process (`host.keep_freed_memory`, on when absent)."""
    keep = OmegaConf.select(cfg, "host.keep_freed_memory", default=True)
    if keep and not keep_freed_memory():
        log.debug("host.keep_freed_memory: the C library is not glibc; its allocator is left as it is.")


def page_faults() -> int:
    """Minor page faults of this process so far (pages the kernel mapped in on first touch); POSIX only."""
    import resource  # not on Windows, where the rest of this module still imports

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _glibc_mallopt() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(library, "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
