"""Simulator speed: crossbar MVMs per second and instructions per second.

MVM: a 128x128 block of 8-bit weights on 2-bit cells (4 crossbars of the
isaac target), int8 inputs streamed with a 1-bit DAC, batch of 1000 inputs,
by the exact path (ideal ADC) and by the bit-level path (the ADC what-if).
Instructions: a scalar loop and a loop with a 16-element vector add, batch 1.
Each figure is the median of several runs. The MVM figures depend on BLAS
threading: on a busy machine OPENBLAS_NUM_THREADS=1 is several times faster.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from cimc.isa.assembler import assemble_text
from cimc.isa.image import Image
from cimc.isa.simulator import SimOptions, simulate
from cimc.targets import load_target

RUNS = 5
BATCH = 1000


def _median_seconds(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mvm_rate(count: int, options: SimOptions) -> float:
    """Crossbar-group MVM instructions per second (each over the whole batch)."""
    target = load_target("isaac")
    rng = np.random.default_rng(0)
    image = Image(target.cell_bits, target.rows, target.cols)
    image.core(0, crossbars=4).add_group(0, rng.integers(-128, 128, (128, 128)), 8, 2)
    program = assemble_text(f"""
.input x, 0, i8, [128], 1.0, 0
.core 0
    ld 0(r0), 0(r0), 128
    li r1, {count}
loop:
    mvm.i8 0, 1024(r0), 0(r0)
    addi r1, r1, -1
    bne r1, r0, loop
""")
    x = rng.integers(-128, 128, (BATCH, 128)).astype(np.int8)
    seconds = _median_seconds(lambda: simulate(program, image, target, {"x": x}, options))
    return count / seconds


def instruction_rate(body: str, count: int) -> float:
    """Instructions per second of a counted loop around `body`."""
    target = load_target("tiny")
    program = assemble_text(f"""
.core 0
    li r1, {count}
loop:
    {body}
    addi r1, r1, -1
    bne r1, r0, loop
""")
    executed = simulate(program, None, target, {}).report["instructions"]
    return executed / _median_seconds(lambda: simulate(program, None, target, {}))


def main() -> None:
    exact = mvm_rate(200, SimOptions())
    bit_level = mvm_rate(10, SimOptions(bit_level=True))
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"   128x128 MVM, 8-bit weights on 2-bit cells, 1-bit DAC, batch {BATCH} "
          f"(OPENBLAS_NUM_THREADS={threads}):")
    for name, rate in (("exact path    ", exact), ("bit-level path", bit_level)):
        print(f"     {name}  {rate:10.0f} MVM/s  ({rate * BATCH:.3g} input vectors/s)")
    scalar = instruction_rate("addi r2, r2, 3", 100_000)
    vector = instruction_rate("vadd.i8 32(r0), 0(r0), 16(r0), 16", 30_000)
    print(f"   scalar loop       {scalar:10.3g} instructions/s")
    print(f"   vector loop       {vector:10.3g} instructions/s (16-element vadd, batch 1)")


if __name__ == "__main__":
    main()
