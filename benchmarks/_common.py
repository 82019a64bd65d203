"""What the benchmarks share: the peak memory of a block of code, and the probe batch.

``PeakMemory("cpu")`` samples this process's resident set size (``/proc/self/statm``) every
``interval`` seconds in a background thread; ``PeakMemory("cuda")`` reads
``torch.cuda.max_memory_allocated``. ``peak``: absolute bytes; ``delta``: the increase over
the value at entry. With ``trim`` (the default) the CPU sampler first collects garbage and calls
glibc's ``malloc_trim(0)``, so memory freed by earlier measurements is returned to the OS and
does not hide this block's allocations. torch is imported only for CUDA, so a driver process
that launches measurements in subprocesses stays free of it.
"""
from __future__ import annotations

import ctypes
import gc
import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")

__all__ = ["PAGE", "PeakMemory", "make_batch", "rss"]


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak`` / ``mem.delta`` (bytes)."""

    def __init__(self, device: str = "cpu", interval: float = 1e-3, *, trim: bool = True) -> None:
        self.cuda = str(device).startswith("cuda")
        self.interval = interval
        self.trim = trim
        self.start = self.peak = 0

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start = self.peak = torch.cuda.memory_allocated()
            return self
        if self.trim:
            gc.collect()
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:  # pragma: no cover - not glibc
                pass
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
            return
        self.peak = max(self.peak, rss())
        self._stop.set()
        self._thread.join()

    @property
    def delta(self) -> int:
        return self.peak - self.start


def make_batch(vocab: int, n: int, seq_len: int, seed: int = 0, device: str = "cpu"):
    """Right-padded batch: prompts of min(16, seq_len/4) tokens masked, lengths between seq_len/2 and seq_len."""
    import torch

    from geffect.losses import IGNORE_INDEX

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq_len), generator=g)  # (N, T)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (n,), generator=g)  # (N,)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()  # (N, T)
    ids = ids * mask
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, : min(16, seq_len // 4)] = IGNORE_INDEX
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": mask, "labels": labels}.items()}
