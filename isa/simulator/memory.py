"""Byte-addressed memories with a leading batch axis, allocated in pages on first touch.

Every memory holds one byte array per batch element (the simulator runs a
batch of inputs in lockstep), so a read of n bytes returns uint8 [batch, n].
Pages are allocated when touched, so a large global memory, or a local memory
used only at high addresses, costs only what the program touches. Multi-byte
elements are little-endian.
"""

from __future__ import annotations

import numpy as np

PAGE_BYTES = 4096

# Element type suffix -> little-endian numpy dtype.
ELEMENT_DTYPES: dict[str, np.dtype] = {
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i32": np.dtype("<i4"),
}


class MemoryFault(Exception):
    """An access outside the memory; the machine turns it into a located CimcError."""


class Memory:
    """`size` bytes per batch element, zero-initialised."""

    def __init__(self, name: str, size: int, batch: int):
        self.name = name
        self.size = size
        self.batch = batch
        self.pages: dict[int, np.ndarray] = {}
        # Results still in flight (lo, hi, ready cycle): an access overlapping one raises
        # `stall` to its ready cycle, the time the accessing instruction must wait for.
        self.pending: list[tuple[int, int, int]] = []
        self.stall = 0

    def _wait(self, addr: int, nbytes: int) -> None:
        end = addr + nbytes
        for lo, hi, ready in self.pending:
            if lo < end and addr < hi and ready > self.stall:
                self.stall = ready

    def ready_at(self, addr: int, nbytes: int) -> int:
        """The cycle at which every result in flight over [addr, addr + nbytes) is written."""
        end = addr + nbytes
        return max((r for lo, hi, r in self.pending if lo < end and addr < hi), default=0)

    def _page(self, index: int) -> np.ndarray:
        page = self.pages.get(index)
        if page is None:
            page = np.zeros((self.batch, PAGE_BYTES), dtype=np.uint8)
            self.pages[index] = page
        return page

    def _check(self, addr: int, nbytes: int) -> None:
        if addr < 0 or nbytes < 0 or addr + nbytes > self.size:
            raise MemoryFault(
                f"access to {self.name} bytes [{addr}, {addr + nbytes}) is outside "
                f"its {self.size} bytes"
            )

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        """Bytes [addr, addr + nbytes) of every batch element: uint8 [batch, nbytes].

        Within one page this is a view; callers must not keep it across writes.
        """
        if addr < 0 or nbytes < 0 or addr + nbytes > self.size:
            self._check(addr, nbytes)
        if self.pending:
            self._wait(addr, nbytes)
        index, start = divmod(addr, PAGE_BYTES)
        if start + nbytes <= PAGE_BYTES:  # the common case, kept short: one view
            page = self.pages.get(index)
            if page is None:
                page = self._page(index)
            return page[:, start : start + nbytes]
        out = np.empty((self.batch, nbytes), dtype=np.uint8)
        done = 0
        while done < nbytes:
            index, start = divmod(addr + done, PAGE_BYTES)
            take = min(PAGE_BYTES - start, nbytes - done)
            out[:, done : done + take] = self._page(index)[:, start : start + take]
            done += take
        return out

    def write(self, addr: int, data: np.ndarray) -> None:
        """Store uint8 [batch, n] (or [n], the same for every batch element) at addr."""
        nbytes = data.shape[-1]
        if addr < 0 or nbytes < 0 or addr + nbytes > self.size:
            self._check(addr, nbytes)
        if self.pending:
            self._wait(addr, nbytes)
        index, start = divmod(addr, PAGE_BYTES)
        if start + nbytes <= PAGE_BYTES:  # the common case: one slice of one page
            page = self.pages.get(index)
            if page is None:
                page = self._page(index)
            page[:, start : start + nbytes] = data
            return
        if addr % PAGE_BYTES + nbytes > PAGE_BYTES and data.base is not None:
            data = data.copy()  # it may view a page this write changes part way through
        done = 0
        while done < nbytes:
            index, start = divmod(addr + done, PAGE_BYTES)
            take = min(PAGE_BYTES - start, nbytes - done)
            self._page(index)[:, start : start + take] = data[..., done : done + take]
            done += take

    def load(self, addr: int, count: int, element: str) -> np.ndarray:
        """`count` elements of type `element` at addr: [batch, count]."""
        dtype = ELEMENT_DTYPES[element]
        return self.read(addr, count * dtype.itemsize).view(dtype)

    def store(self, addr: int, values: np.ndarray, element: str) -> None:
        """Write [batch, count] values (already in range) as `element` at addr."""
        dtype = ELEMENT_DTYPES[element]
        raw = np.ascontiguousarray(values, dtype=dtype).view(np.uint8)
        self.write(addr, raw)
