"""The traffic model (cimc/analysis/traffic.py): units, edges and their cost on cores."""

from __future__ import annotations

import backend_models
import pytest

from cimc.analysis.traffic import (
    GLOBAL,
    TrafficEdge,
    core_messages,
    global_bytes,
    hop_bytes,
    link_loads,
    unit_edges,
    units,
)
from cimc.dialect.chip import blocks_of, image_dims
from cimc.frontend.importer import import_onnx
from cimc.ir.module import Module
from cimc.pass_manager import parse_pipeline, run_pipeline
from cimc.pipeline import FRONTEND
from cimc.targets import load_target


def tiled(name: str, target: str, replicas: int = 1) -> Module:
    module = import_onnx(str(backend_models.quantized_model(name)))
    run_pipeline(module, parse_pipeline(",".join(FRONTEND)))
    run_pipeline(module, parse_pipeline("lower,tile", load_target(target)))
    for op in module.ops():
        if op.kind == "matvec":
            op.attrs["replicas"] = replicas
    return module


@pytest.fixture(scope="module")
def mnist() -> Module:
    return tiled("mnist_tiny", "tiny")


def test_units_are_blocks_per_replica_and_vector_ops(mnist: Module) -> None:
    tiny = load_target("tiny")
    found = units(mnist, tiny)
    matvecs = [op for op in mnist.ops() if op.kind == "matvec"]
    vectors = [op for op in mnist.ops() if op.kind in ("pool", "eltwise", "rescale", "join")]
    assert len(found) == sum(len(blocks_of(op)) for op in matvecs) + len(vectors)
    first = next(u for u in found if u.kind == "block")
    assert first.name == f"{matvecs[0].name}#0.0.0"
    assert first.crossbar_columns_needed == first.weight_cols * tiny.slices
    oh, ow, _ = image_dims(mnist.values[matvecs[0].outputs[0]])
    assert first.windows == oh * ow  # conv1: one MVM per output pixel
    twice = tiled("mnist_tiny", "tiny", replicas=2)
    doubled = units(twice, tiny)
    blocks = [u for u in doubled if u.kind == "block" and u.op == matvecs[0].name]
    assert sorted({u.replica for u in blocks}) == [0, 1]
    assert sum(u.windows for u in blocks if u.i == 0 and u.j == 0) == oh * ow


def test_edges_follow_rows_channels_and_replicas(mnist: Module) -> None:
    tiny = load_target("tiny")
    edges = unit_edges(mnist, tiny)
    conv1, conv2, fc = [op for op in mnist.ops() if op.kind == "matvec"]
    # conv1 reads the model input: 28 rows of 28 pixels, each row once (3x3, stride 2, pad 1).
    loads = [e for e in edges if e.src == GLOBAL]
    assert loads and all(e.dst.startswith(conv1.name) for e in loads)
    assert {e.bytes for e in loads} == {28 * 28 * 1}
    # psums: every non-first row block of a column sends pixels * cols * 4 bytes.
    oh, ow, n = image_dims(mnist.values[fc.outputs[0]])
    psum = [e for e in edges if e.kind == "psum" and e.dst.startswith(fc.name)]
    rows_blocks = [i for i, j in blocks_of(fc) if j == 0]
    assert len(psum) == len(rows_blocks) - 1
    assert {e.bytes for e in psum} == {oh * ow * n * 4}
    # The result leaves through global memory.
    assert [e.kind for e in edges if e.dst == GLOBAL] == ["output"]
    # Split over two replicas, activation bytes into conv2 stay the same in total.
    twice = unit_edges(tiled("mnist_tiny", "tiny", replicas=2), tiny)

    def into(es: list[TrafficEdge], op: str) -> int:
        return sum(e.bytes for e in es if e.kind == "activation" and e.dst.startswith(op)
                   and e.dst.endswith(".0.0"))

    assert into(twice, conv2.name) >= into(edges, conv2.name) > 0


def test_core_costs_count_a_payload_once_per_core_pair() -> None:
    tiny = load_target("tiny")  # 2 cores per tile on a 2x2 mesh
    edges = [TrafficEdge("a", "b1", 100, "activation", "row"),
             TrafficEdge("a", "b2", 100, "activation", "row"),  # same payload, same core
             TrafficEdge("c", "b1", 40, "psum", "p"),
             TrafficEdge(GLOBAL, "a", 7, "input", "x")]
    cores = {"a": 0, "b1": 6, "b2": 6, "c": 6}
    assert core_messages(edges, cores) == {(0, 6): 100}
    assert hop_bytes(edges, cores, tiny) == 100 * 2  # tile 0 (0,0) -> tile 3 (1,1)
    assert link_loads(edges, cores, tiny) == {((0, 0), (1, 0)): 100, ((1, 0), (1, 1)): 100}
    assert global_bytes(edges, cores) == 7
    cores["b2"] = 2  # tile 1: now the payload travels twice
    assert hop_bytes(edges, cores, tiny) == 100 * 2 + 100 * 1
    assert hop_bytes(edges, dict.fromkeys(cores, 1), tiny) == 0
