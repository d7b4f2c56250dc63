"""Assertions the model tests share: a saved program, simulated, equals the reference
interpreter bit for bit at every output port; the reference is within one quantum of
the exact oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import cimc
from cimc.host.ports import reference_codes
from cimc.ir.module import Module
from cimc.isa.assembler import assemble_file
from cimc.isa.image import load_image
from cimc.isa.simulator import run_program
from cimc.reference.oracle import ExactOracle


def assert_simulation_equals_reference(program: cimc.Program, prog: Path,
                                       x: np.ndarray) -> None:
    """`program`, saved as `prog` (and its image beside it), run on the samples `x` of
    its one input: the codes at every output port are the reference's."""
    inputs, expected = reference_codes(program.integer, {program.integer.inputs[0]: x})
    outputs, _ = run_program(assemble_file(prog), load_image(prog.with_suffix(".img")),
                             program.target, inputs)
    assert sorted(outputs) == sorted(expected)
    for port, codes in expected.items():
        # (a time-major sequence's samples are [T·1, C] to the program, [T, 1, C] stacked
        # to the reference: the same bytes)
        assert outputs[port].size == codes.size, (port, outputs[port].shape, codes.shape)
        np.testing.assert_array_equal(outputs[port].reshape(codes.shape), codes)


def output_scale(module: Module) -> float:
    """The quantum of the model's output: the scale the last dequantize reads."""
    dequantize = next(op for op in module.ops() if op.kind == "dequantize"
                      and op.outputs[0] in module.outputs)
    return float(module.values[dequantize.inputs[0]].quant.scale[0])  # type: ignore[union-attr]


def assert_within_a_quantum_of_the_oracle(program: cimc.Program, model: Path,
                                          x: np.ndarray, output: str = "logits",
                                          batch: int = 1) -> np.ndarray:
    """The reference's `output` for the samples `x` of the input "input" is within one
    quantum of the exact oracle running `model` (fed `batch` samples at a time: the batch
    baked into its shapes); returns it."""
    reference = cimc.run_reference(program.integer, {"input": x})[output]
    quantum = output_scale(program.integer)
    expected = ExactOracle(model).run_samples(x, batch=batch)
    assert np.abs(reference - expected).max() <= quantum * 1.0001
    return reference
