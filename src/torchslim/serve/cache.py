"""Response cache: LRU keyed by a hash of the model and the input bytes, bounded in entries and MB.

Off by default (``--cache-size 0``): a cache only helps when clients repeat exact inputs. The key
is SHA-256 over the model's manifest hash, every input's dtype and shape, and its raw bytes, so a
different model, a reshaped or a re-typed input never hits another's entry.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from torchslim._io import MB

__all__ = ["ResponseCache", "cache_key"]


def cache_key(model_hash: str, inputs: Sequence[np.ndarray]) -> str:
    """SHA-256 of the model hash and each input's dtype, shape and bytes."""
    h = hashlib.sha256(model_hash.encode())
    for a in inputs:
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


class ResponseCache:
    """A thread-safe LRU of output arrays.

    Args:
        max_entries: Entries at most (0 disables the cache).
        max_mb: MB (10^6 bytes) of output arrays at most.
    """

    def __init__(self, max_entries: int = 0, max_mb: float = 64.0) -> None:
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = int(max_mb * MB)
        self._data: collections.OrderedDict[str, tuple[list[np.ndarray], int]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """Whether the cache stores anything."""
        return self.max_entries > 0 and self.max_bytes > 0

    def get(self, key: str) -> list[np.ndarray] | None:
        """The outputs stored under ``key`` (most recently used now), or ``None``."""
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit[0]

    def put(self, key: str, outputs: Sequence[np.ndarray]) -> None:
        """Store copies of ``outputs``; evicts least recently used entries over the bounds."""
        if not self.enabled:
            return
        arrays = [np.array(o, copy=True) for o in outputs]
        size = sum(a.nbytes for a in arrays)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (arrays, size)
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, freed) = self._data.popitem(last=False)
                self._bytes -= freed

    def __len__(self) -> int:
        return len(self._data)
