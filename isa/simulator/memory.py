"""Byte-addressed memories with a leading batch axis, allocated in pages on first touch.

Every memory holds one byte array per batch element (the simulator runs a
batch of inputs in lockstep), so a read of n bytes returns uint8 [batch, n].
Pages are allocated when touched, so a large global memory, or a local memory
used only at high addresses, costs only what the program touches. A page is
64 KiB for a small batch (a strided window of a feature map then seldom spans
two pages, which costs a gathered copy) and shrinks to 4 KiB as the batch grows
to keep a page near 1 MiB. Multi-byte elements are little-endian.
"""

from __future__ import annotations

import numpy as np

PAGE_BYTES = 4096  # the smallest page
_PAGE_BATCH_BYTES = 1 << 20  # pages grow to this many bytes over the whole batch...
_LARGEST_PAGE = 1 << 16  # ...up to this: a small batch's vectors and windows seldom cross one


def page_bytes(batch: int) -> int:
    """The page size for `batch` elements: 64 KiB for a few, 4 KiB for a thousand."""
    size = PAGE_BYTES
    while size < _LARGEST_PAGE and 2 * size * batch <= _PAGE_BATCH_BYTES:
        size *= 2
    return size

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

    def __init__(self, name: str, size: int, batch: int, page: int | None = None):
        self.name = name
        self.size = size
        self.batch = batch
        self.page = page or page_bytes(batch)
        self.pages: dict[int, np.ndarray] = {}
        # Results still in flight (lo, hi, ready cycle): an access overlapping one raises
        # `stall` to its ready cycle, the time the accessing instruction must wait for.
        self.pending: list[tuple[int, int, int]] = []
        self.stall = 0
        # Bytes [low, high) cover every result in flight (empty: high = 0): most accesses
        # fall outside and skip the list (in ResNet-18 99% of the waits find nothing).
        self.pending_low = 0
        self.pending_high = 0
        # (addr, count, element) -> typed view of the page holding them. Pages are never
        # replaced, so a view stays valid; vector instructions then skip address arithmetic.
        self.views: dict[tuple[int, int, str], np.ndarray] = {}

    def _wait(self, addr: int, nbytes: int) -> None:
        end = addr + nbytes
        if end <= self.pending_low or not self.pending:
            return
        for lo, hi, ready in self.pending:
            if lo < end and addr < hi and ready > self.stall:
                self.stall = ready

    def hold(self, lo: int, hi: int, ready: int, done: int) -> None:
        """Bytes [lo, hi) are in flight until cycle `ready`; results ready by `done` are
        forgotten (the core's clock is past them, so they can delay nothing)."""
        pending = self.pending
        low, high = lo, hi
        if pending and pending[0][2] <= done:
            pending = self.pending = [p for p in pending if p[2] > done]
            for p in pending:  # the span shrinks with the list
                if p[0] < low:
                    low = p[0]
                if p[1] > high:
                    high = p[1]
        elif pending:
            low, high = min(lo, self.pending_low), max(hi, self.pending_high)
        pending.append((lo, hi, ready))
        self.pending_low, self.pending_high = low, high

    def put_result(self, addr: int, values: np.ndarray, accumulate: bool) -> None:
        """An MVM's i32 result written (accumulate: added to the i32 there) without
        waiting: ordering it after results in flight is the crossbar's adder's business."""
        view = self.views.get((addr, values.shape[-1], "i32"))
        if view is not None:  # the common case, without the detour below
            if accumulate:
                values += view
            view[...] = values
            return
        pending, self.pending = self.pending, []
        try:
            if accumulate:  # wraps modulo 2^32 as the int64 sum cast to i32 would
                values += self.elements(addr, values.shape[-1], "i32")
            self.put(addr, values, "i32")
        finally:
            self.pending = pending

    def ready_at(self, addr: int, nbytes: int) -> int:
        """The cycle at which every result in flight over [addr, addr + nbytes) is written."""
        end = addr + nbytes
        return max((r for lo, hi, r in self.pending if lo < end and addr < hi), default=0)

    def _page(self, index: int) -> np.ndarray:
        page = self.pages.get(index)
        if page is None:
            page = np.zeros((self.batch, self.page), dtype=np.uint8)
            self.pages[index] = page
        return page

    def page_at(self, index: int) -> np.ndarray:
        """Page `index` (bytes [index * page, (index + 1) * page)): uint8 [batch, page],
        allocated if untouched. Writes through it bypass the results-in-flight checks."""
        return self._page(index)

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
        unit = self.page  # page size
        if addr < 0 or nbytes < 0 or addr + nbytes > self.size:
            self._check(addr, nbytes)
        if addr < self.pending_high and self.pending_low < addr + nbytes:
            self._wait(addr, nbytes)
        index, start = divmod(addr, unit)
        if start + nbytes <= unit:  # the common case, kept short: one view
            page = self.pages.get(index)
            if page is None:
                page = self._page(index)
            return page[:, start : start + nbytes]
        out = np.empty((self.batch, nbytes), dtype=np.uint8)
        done = 0
        while done < nbytes:
            index, start = divmod(addr + done, unit)
            take = min(unit - start, nbytes - done)
            out[:, done : done + take] = self._page(index)[:, start : start + take]
            done += take
        return out

    def write(self, addr: int, data: np.ndarray) -> None:
        """Store uint8 [batch, n] (or [n], the same for every batch element) at addr."""
        unit = self.page  # page size
        nbytes = data.shape[-1]
        if addr < 0 or nbytes < 0 or addr + nbytes > self.size:
            self._check(addr, nbytes)
        if addr < self.pending_high and self.pending_low < addr + nbytes:
            self._wait(addr, nbytes)
        index, start = divmod(addr, unit)
        if start + nbytes <= unit:  # the common case: one slice of one page
            page = self.pages.get(index)
            if page is None:
                page = self._page(index)
            page[:, start : start + nbytes] = data
            return
        if addr % unit + nbytes > unit and data.base is not None:
            data = data.copy()  # it may view a page this write changes part way through
        done = 0
        while done < nbytes:
            index, start = divmod(addr + done, unit)
            take = min(unit - start, nbytes - done)
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

    def elements(self, addr: int, count: int, element: str) -> np.ndarray:
        """load(), as a view of the page (not to be kept across writes) when one holds them."""
        view = self.views.get((addr, count, element))
        if view is None:
            view = self._view(addr, count, element)
            if view is None:
                return self.load(addr, count, element)
        if addr < self.pending_high:
            self._wait(addr, count * _ITEMSIZE[element])
        return view

    def put(self, addr: int, values: np.ndarray, element: str) -> None:
        """store() of integer values already in range of `element` (i32: wrapped by the cast)."""
        view = self.views.get((addr, count := values.shape[-1], element))
        if view is None:
            view = self._view(addr, count, element)
            if view is None:
                self.store(addr, values, element)
                return
        if addr < self.pending_high:
            self._wait(addr, count * _ITEMSIZE[element])
        view[...] = values

    def _view(self, addr: int, count: int, element: str) -> np.ndarray | None:
        """The cached view of `count` elements at addr, or None when they cross a page."""
        unit = self.page  # page size
        dtype = ELEMENT_DTYPES[element]
        nbytes = count * dtype.itemsize
        if addr < 0 or count < 0 or addr + nbytes > self.size:
            self._check(addr, nbytes)
        index, start = divmod(addr, unit)
        if start + nbytes > unit:
            return None
        view = self._page(index)[:, start : start + nbytes].view(dtype)
        if len(self.views) >= _MAX_VIEWS:  # addresses from registers may vary without end
            self.views.clear()
        self.views[(addr, count, element)] = view
        return view


_MAX_VIEWS = 1 << 13  # a few MB of views at most; ResNet-18 keeps < 400 a core
_ITEMSIZE = {name: dtype.itemsize for name, dtype in ELEMENT_DTYPES.items()}
