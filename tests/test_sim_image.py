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
