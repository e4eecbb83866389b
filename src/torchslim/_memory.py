"""Peak-memory probe used by :mod:`torchslim.measure`: RSS growth on CPU, allocator peak on CUDA."""

from __future__ import annotations

import gc
import threading
from typing import Any

_MIB = 2**20


class _MemoryProbe:
    """Peak memory growth per tag: CPU RSS (sampler thread + Linux VmHWM) or CUDA allocator."""

    def __init__(self, device: str, interval_s: float = 0.002) -> None:
        self.device = device
        self.interval_s = interval_s
        self.baseline: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self._tag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._hwm = False
        if device == "cpu":
            import psutil

            self._process = psutil.Process()
            self._hwm = self._reset_hwm()

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _read_hwm() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return None

    def _rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _record(self, tag: str, value: int) -> None:
        if value > self.peak.get(tag, -1):
            self.peak[tag] = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            tag = self._tag
            rss = self._rss()
            if tag is not None and tag == self._tag:
                self._record(tag, rss)

    def __enter__(self) -> _MemoryProbe:
        if self.device == "cpu":
            self._thread = threading.Thread(target=self._loop, name="torchslim-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def set_baseline(self, tag: str) -> None:
        """Release freed memory, then record the current level as ``tag``'s zero."""
        gc.collect()
        if self.device == "cpu":
            _malloc_trim()
            self.baseline[tag] = self._rss()
        else:
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self.baseline[tag] = int(torch.cuda.memory_allocated())

    def begin(self, tag: str) -> None:
        if self.device == "cpu":
            if self._hwm:
                self._reset_hwm()
            self._record(tag, self._rss())
        else:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._tag = tag

    def end(self) -> None:
        tag, self._tag = self._tag, None
        if tag is None:
            return
        if self.device == "cpu":
            self._record(tag, self._rss())
            hwm = self._read_hwm() if self._hwm else None
            if hwm is not None:
                self._record(tag, hwm)
        else:
            import torch

            torch.cuda.synchronize()
            self._record(tag, int(torch.cuda.max_memory_allocated()))

    def growth_mb(self, tag: str) -> float | None:
        if tag not in self.peak or tag not in self.baseline:
            return None
        return max(0, self.peak[tag] - self.baseline[tag]) / _MIB


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc) so one model's garbage is not another's peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
