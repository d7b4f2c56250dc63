"""Reading model inputs and writing model outputs as numpy files.

A single-input model reads an .npy array; any model reads an .npz keyed by
input name. An array may stack several batches of the model on axis 0. Outputs
are written the same way (.npy for one output, .npz for any number), each in
the model's own output element type.
"""

from __future__ import annotations

import io
import tokenize
import zipfile
from pathlib import Path

import numpy as np

from cimc.diagnostics import CimcError
from cimc.ir.module import TensorType
from cimc.outputs import write_atomic


def read_inputs(path: str, inputs: dict[str, TensorType]) -> dict[str, np.ndarray]:
    """Arrays for the model inputs `inputs` (name -> type) read from `path`, checked and cast."""
    return check_inputs(path, _load(path, list(inputs)), inputs)


def check_inputs(where: str, arrays: dict[str, np.ndarray],
                 inputs: dict[str, TensorType]) -> dict[str, np.ndarray]:
    """`arrays` (one per name of `inputs`) checked against the model input types and cast;
    errors name `where` the arrays come from."""
    checked = {name: _checked(where, name, np.asarray(arrays[name]), ty)
               for name, ty in inputs.items()}
    # A 0-d input cannot be stacked: it holds one batch.
    counts = {name: len(checked[name]) // ty.shape[0] if ty.shape else 1
              for name, ty in inputs.items()}
    if len(set(counts.values())) > 1:
        held = ", ".join(f"{name!r} {count}" for name, count in counts.items())
        raise CimcError(f"{where}: the inputs hold different numbers of batches ({held}); "
                        "give every input the same number (a 0-d input holds one)")
    return checked


def named_arrays(where: str, arrays: np.ndarray | dict[str, np.ndarray],
                 names: list[str]) -> dict[str, np.ndarray]:
    """In-memory inputs by model input name: one array for a single-input model, else a
    dict holding exactly the input names; errors name `where` they come from."""
    if not isinstance(arrays, dict):
        if len(names) != 1:
            raise CimcError(f"{where}: the model has {len(names)} inputs ({', '.join(names)}); "
                            "give a dict with one array per input name")
        return {names[0]: np.asarray(arrays)}
    missing = [n for n in names if n not in arrays]
    unknown = [k for k in arrays if k not in names]
    if missing or unknown:
        detail = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise CimcError(f"{where}: arrays must be named after the model inputs "
                        f"({', '.join(names)}); {detail}")
    return {name: np.asarray(arrays[name]) for name in names}


def load_arrays(path: str) -> np.ndarray | dict[str, np.ndarray]:
    """The array of an .npy file, or the arrays of an .npz file by name, read in full.

    Whatever is wrong with the file (a missing or malformed header, truncated
    data, object arrays, an .npy file named .npz) is a CimcError naming it.
    """
    file = Path(path)
    if not file.is_file():
        raise CimcError(f"{path}: no such file; give a .npy or .npz file of inputs")
    suffix = file.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise CimcError(f"{path}: unknown input file type {suffix!r}; use .npy or .npz")
    head = _head(file, len(np.lib.format.MAGIC_PREFIX))
    if suffix == ".npy" and head != np.lib.format.MAGIC_PREFIX:
        raise CimcError(f"{path}: not a numpy .npy file (it lacks the .npy header); "
                        "save the inputs with numpy.save")
    if suffix == ".npz" and head == np.lib.format.MAGIC_PREFIX:
        raise CimcError(f"{path}: an .npy file (one array) named .npz; rename it to .npy, "
                        "or save one array per input name with numpy.savez")
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:  # every member read here, so a bad one fails here
            return {key: loaded[key] for key in loaded.files}
    # A header numpy cannot parse raises what its parser raises (tokenize, ast).
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, SyntaxError,
            tokenize.TokenError) as exc:
        raise CimcError(f"{path}: not a readable numpy {suffix} file ({exc}); "
                        f"save the inputs with numpy.{'save' if suffix == '.npy' else 'savez'}"
                        ) from None


def _load(path: str, names: list[str]) -> dict[str, np.ndarray]:
    loaded = load_arrays(path)
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise CimcError(
                f"{path}: the model has {len(names)} inputs ({', '.join(names)}); "
                "give an .npz file with one array per input name"
            )
        return {names[0]: loaded}
    arrays = loaded
    missing = [n for n in names if n not in arrays]
    unknown = [k for k in arrays if k not in names]
    if missing or unknown:
        detail = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
        raise CimcError(
            f"{path}: arrays must be named after the model inputs ({', '.join(names)}); {detail}"
        )
    return arrays


def _head(file: Path, size: int) -> bytes:
    try:
        with file.open("rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise CimcError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _checked(path: str, name: str, array: np.ndarray, ty: TensorType) -> np.ndarray:
    expected = list(ty.shape)
    shape = list(array.shape)
    if len(expected) == 4 and expected[2] == 1 and len(shape) == 3 \
            and shape[1:] == [expected[1], expected[3]]:
        # A 1-D signal [N, C, L], which the model reads as [N, C, 1, L]
        # (cimc/frontend/signal.py): the same elements.
        array = array.reshape(shape[0], expected[1], 1, expected[3])
        shape = list(array.shape)
    stacked = (
        len(shape) == len(expected) > 0
        and shape[1:] == expected[1:]
        and expected[0] > 0
        and shape[0] > 0
        and shape[0] % expected[0] == 0
    )
    if shape != expected and not stacked:
        raise CimcError(
            f"{path}: input {name!r} has shape {shape} but the model expects {expected} "
            "(or several of them stacked on axis 0)"
        )
    if ty.dtype == "f32":
        if not np.issubdtype(array.dtype, np.floating):
            raise CimcError(
                f"{path}: input {name!r} has element type {array.dtype} but the model expects "
                "floats (f32); convert the data to float32 as the model's training did"
            )
        if array.size and not np.isfinite(array).all():
            raise CimcError(f"{path}: input {name!r} holds NaN or infinite values; "
                            "give finite numbers")
        return array.astype(np.float32)
    info = np.iinfo(ty.numpy_dtype) if np.issubdtype(ty.numpy_dtype, np.integer) else None
    if info is None or not np.issubdtype(array.dtype, np.integer):
        raise CimcError(
            f"{path}: input {name!r} has element type {array.dtype}; the model expects {ty.dtype}"
        )
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise CimcError(f"{path}: input {name!r} has values outside the range of {ty.dtype}")
    return array.astype(ty.numpy_dtype)


def write_outputs(path: str, outputs: dict[str, np.ndarray], types: dict[str, TensorType]) -> None:
    """Write `outputs` (name -> array) to `path` (.npy for one output, .npz keyed by name)."""
    write_atomic(path, encode_outputs(path, outputs, types))


def encode_outputs(path: str, outputs: dict[str, np.ndarray],
                   types: dict[str, TensorType]) -> bytes:
    """The bytes `write_outputs` writes to `path`."""
    suffix = Path(path).suffix.lower()
    arrays = {
        name: np.asarray(value).astype(types[name].numpy_dtype) for name, value in outputs.items()
    }
    buffer = io.BytesIO()
    if suffix == ".npy":
        if len(arrays) != 1:
            raise CimcError(
                f"{path}: the model has {len(arrays)} outputs ({', '.join(arrays)}); "
                "write them to an .npz file"
            )
        np.save(buffer, next(iter(arrays.values())), allow_pickle=False)
    elif suffix == ".npz":
        with zipfile.ZipFile(buffer, "w") as archive:  # the layout of np.savez
            for name, array in arrays.items():
                # A fixed timestamp: the same outputs give the same bytes.
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(info, "w") as entry:
                    np.lib.format.write_array(entry, array, allow_pickle=False)
    else:
        raise CimcError(f"{path}: unknown output file type {suffix!r}; use .npy or .npz")
    return buffer.getvalue()
