"""The crossbar programming image: bit slicing, placement, the deterministic .img file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cimc.diagnostics import CimcError
from cimc.isa.image import Image, Slice, group_weights, load_image, program_group, save_image


def test_program_group_stores_offset_binary_digits() -> None:
    w = np.array([[-128, -1, 0, 127]])
    digits = program_group(w, 8, 2)
    # u = w + 128 = 0, 127, 128, 255 -> base-4 digits, least significant first
    assert digits[:, 0, :].T.tolist() == [[0, 0, 0, 0], [3, 3, 3, 1], [0, 0, 0, 2], [3, 3, 3, 3]]
    np.testing.assert_array_equal(group_weights(digits, 8, 2), w)


def test_program_group_rejects_weights_outside_their_bits() -> None:
    with pytest.raises(ValueError, match="4-bit range"):
        program_group(np.array([[8]]), 4, 1)


def _image() -> Image:
    rng = np.random.default_rng(0)
    image = Image(cell_bits=2, rows=16, cols=16)
    image.core(0, crossbars=4).add_group(0, rng.integers(-128, 128, (16, 8)), 8, 2)
    image.core(0).add_group(3, rng.integers(-8, 8, (10, 5)), 4, 2)
    explicit = [Slice(1, 0, 0), Slice(1, 0, 4), Slice(0, 8, 0), Slice(0, 8, 12)]
    image.core(5, crossbars=2).add_group(1, rng.integers(-128, 128, (8, 4)), 8, 2, explicit)
    return image


def test_first_fit_places_slices_on_free_cells_only() -> None:
    image = _image()
    core = image.cores[0]
    taken = np.zeros(core.cells.shape, dtype=int)
    for group in core.groups.values():
        for s in group.slices:
            taken[s.crossbar, s.row : s.row + group.rows_used,
                  s.col : s.col + group.cols_used] += 1
    assert taken.max() == 1  # no cell holds two digits
    assert len(core.groups[0].slices) == 4 and len(core.groups[3].slices) == 2
    with pytest.raises(ValueError, match="no free"):
        image.core(5).add_group(2, np.zeros((16, 16), dtype=int), 8, 2)


def test_image_file_round_trips_byte_identically(tmp_path: Path) -> None:
    image = _image()
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    save_image(image, first)
    save_image(_image(), second)
    assert first.read_bytes() == second.read_bytes()
    loaded = load_image(first)
    assert loaded.to_bytes() == first.read_bytes()
    assert sorted(loaded.cores) == [0, 5]
    for number, core in image.cores.items():
        np.testing.assert_array_equal(loaded.cores[number].cells, core.cells)
        assert loaded.cores[number].groups == core.groups


def test_corrupt_image_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.img"
    good = _image().to_bytes()
    for content in (b"not an image", good[:-10], good + b"x"):
        path.write_bytes(content)
        with pytest.raises(CimcError, match="bad.img"):
            load_image(path)
    with pytest.raises(CimcError, match="missing.img"):
        load_image(tmp_path / "missing.img")


def test_explicit_slices_may_not_overlap_programmed_cells() -> None:
    image = _image()
    before = image.cores[5].cells.copy()
    with pytest.raises(ValueError, match="overlaps"):
        image.core(5).add_group(7, np.zeros((4, 4), dtype=int), 8, 2,
                                [Slice(0, 12, 0), Slice(0, 12, 4), Slice(0, 8, 0), Slice(0, 0, 8)])
    np.testing.assert_array_equal(image.cores[5].cells, before)  # nothing half-programmed
    assert 7 not in image.cores[5].groups


@pytest.mark.parametrize("cell_bits", [1, 2, 3, 4, 5, 7, 8])
def test_packed_cells_unpack_to_the_same_values(cell_bits: int) -> None:
    from cimc.isa.image import PACK_CHUNK, pack_cells, unpack_cells

    rng = np.random.default_rng(cell_bits)
    for count in (0, 1, 7, 9, PACK_CHUNK + 3):
        values = rng.integers(0, 1 << cell_bits, count).astype(np.uint8)
        packed = pack_cells([values[:5], values[5:]], cell_bits)
        assert len(packed) == -(-count * cell_bits // 8)  # no byte more than the bits need
        np.testing.assert_array_equal(unpack_cells(packed, count, cell_bits), values)


def test_image_file_stores_one_byte_per_8_bit_weight() -> None:
    image = Image(cell_bits=2, rows=128, cols=128)
    weights = np.random.default_rng(1).integers(-128, 128, (128, 32))
    image.core(0, crossbars=8).add_group(0, weights, 8, 2)
    content = image.to_bytes()
    (header,) = np.frombuffer(content, "<u4", 1, 8)
    assert len(content) - 12 - header == weights.size  # 4 two-bit digits a weight
    loaded = Image.from_bytes(content)
    np.testing.assert_array_equal(loaded.cores[0].cells, image.cores[0].cells)


def test_image_with_3_bit_cells_round_trips() -> None:
    image = Image(cell_bits=3, rows=16, cols=16)
    image.core(2, crossbars=3).add_group(4, np.arange(-60, 60).reshape(12, 10), 8, 3)
    loaded = Image.from_bytes(image.to_bytes())
    np.testing.assert_array_equal(loaded.cores[2].cells, image.cores[2].cells)
    assert loaded.cores[2].groups == image.cores[2].groups


def test_old_image_format_asks_for_a_recompile() -> None:
    content = _image().to_bytes().replace(b"CIMCIMG2", b"CIMCIMG1", 1)
    with pytest.raises(CimcError, match="w.img: a crossbar image of an older format.*recompile"):
        Image.from_bytes(content, "w.img")


def test_image_file_with_overlapping_groups_is_refused() -> None:
    content = _image().to_bytes()
    # group 3 of core 0 moved onto the first slice of group 0 (the header keeps its length)
    moved = content.replace(b'"slices":[[2,0,0],[2,0,5]]', b'"slices":[[0,0,0],[2,0,5]]')
    assert moved != content
    with pytest.raises(CimcError, match="overlaps"):
        Image.from_bytes(moved, "w.img")


def test_image_file_with_nonzero_padding_bits_is_refused() -> None:
    image = Image(cell_bits=2, rows=4, cols=8)
    image.core(0).add_group(0, np.array([[5]]), 8, 2)  # 4 digits: one whole byte
    image.core(0).add_group(1, np.array([[1]]), 2, 2)  # 1 digit: 6 padding bits
    content = image.to_bytes()
    assert Image.from_bytes(content).cores[0].cells[0, 0, 4] == 3
    with pytest.raises(CimcError, match="padding bits"):
        Image.from_bytes(content[:-1] + bytes([content[-1] | 0x40]), "w.img")


def test_cells_outside_groups_cannot_be_written() -> None:
    image = _image()
    image.cores[5].cells[1, 15, 15] = 1
    with pytest.raises(ValueError, match="outside every crossbar group"):
        image.to_bytes()
