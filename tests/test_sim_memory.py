"""The simulator's paged memory: views within a page, copies across pages, the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from cimc.isa.simulator.memory import PAGE_BYTES, Memory, MemoryFault, page_bytes

RNG = np.random.default_rng(4)


def test_pages_are_large_for_a_small_batch_and_small_for_a_large_one() -> None:
    assert page_bytes(1) == 65536
    assert page_bytes(1000) == PAGE_BYTES


@pytest.mark.parametrize("addr", [4090, 8192 - 3, 100])
def test_typed_views_and_copies_across_pages_hold_the_same_values(addr: int) -> None:
    memory = Memory("m", 3 * PAGE_BYTES, batch=2, page=PAGE_BYTES)
    values = RNG.integers(-2**31, 2**31, size=(2, 5)).astype(np.int32)
    memory.put(addr, values, "i32")
    np.testing.assert_array_equal(memory.elements(addr, 5, "i32"), values)
    np.testing.assert_array_equal(memory.load(addr, 5, "i32"), values)
    raw = memory.read(addr, 20)
    np.testing.assert_array_equal(raw.view("<i4"), values)
    wrapped = values.astype(np.int64) + (1 << 32)  # put() wraps i32 like a cast
    memory.put(addr, wrapped, "i32")
    np.testing.assert_array_equal(memory.elements(addr, 5, "i32"), values)


def test_an_overlapping_write_across_a_page_boundary_reads_the_old_bytes() -> None:
    memory = Memory("m", 2 * PAGE_BYTES, batch=3, page=PAGE_BYTES)
    x = RNG.integers(0, 256, size=(3, 200)).astype(np.uint8)
    memory.write(PAGE_BYTES - 150, x)
    memory.put(PAGE_BYTES - 100, memory.elements(PAGE_BYTES - 150, 200, "u8"), "u8")
    np.testing.assert_array_equal(memory.read(PAGE_BYTES - 100, 200), x)


def test_an_access_past_the_end_names_the_memory_and_its_size() -> None:
    memory = Memory("core 0 local memory", 100, batch=1)
    with pytest.raises(MemoryFault, match=r"core 0 local memory bytes \[96, 104\).*100 bytes"):
        memory.elements(96, 2, "i32")
    with pytest.raises(MemoryFault, match=r"bytes \[99, 101\)"):
        memory.put(99, np.zeros((1, 2), np.uint8), "u8")
