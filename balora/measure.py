"""Wall time and peak memory of each phase of a run.

CPU peak memory is the process's resident set size, sampled by a background thread (the kernel's
own `ru_maxrss` only knows the peak over the whole process lifetime, not per phase). On a GPU the
CUDA allocator's max-allocated counter is reset and read per phase as well.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil
import torch

MIB = 1 << 20


@dataclass
class PhaseMeter:
    """Records seconds and peak memory (MiB) per named phase."""

    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    peak_cuda_mib: dict[str, float] = field(default_factory=dict)
    interval: float = 0.01

    @contextmanager
    def phase(self, name: str):
        process = psutil.Process()
        peak = [process.memory_info().rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.interval):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sampler.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            stop.set()
            sampler.join()
            peak[0] = max(peak[0], process.memory_info().rss)
            self.peak_rss_mib[name] = max(self.peak_rss_mib.get(name, 0.0), peak[0] / MIB)
            if torch.cuda.is_available():
                self.peak_cuda_mib[name] = torch.cuda.max_memory_allocated() / MIB

    def timings(self) -> dict[str, float]:
        """Seconds per phase, and their sum as `total`."""
        return self.seconds | {"total": sum(self.seconds.values())}
