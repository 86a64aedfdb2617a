"""Cost measurements: parameter counts, wall time per phase, peak memory."""

from __future__ import annotations

import os
import resource
import threading
import time
from contextlib import contextmanager

import torch


def total_params(model) -> int:
    # Tied embeddings are one tensor: count each storage once.
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def model_bytes(model) -> int:
    seen, total = set(), 0
    for p in list(model.parameters()) + list(model.buffers()):
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak resident memory (and CUDA memory) while the context is open.

    The process-wide ru_maxrss cannot be reset between runs of one sweep process, so a
    sampler thread reads the current RSS every `interval` seconds instead.
    """

    def __init__(self, interval: float = 0.05, cuda: bool = True):
        # cuda=False for a window nested in another: CUDA's peak counter is process-wide.
        self.cuda = cuda and torch.cuda.is_available()
        self.interval = interval
        self.peak_rss = 0
        self.peak_cuda = 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, current_rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak_rss = current_rss_bytes()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, current_rss_bytes())
        if self.cuda:
            self.peak_cuda = torch.cuda.max_memory_allocated()
        return False


class PhaseTimer:
    """Wall time per named phase, for the record's `time/<phase>_s` metrics."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
