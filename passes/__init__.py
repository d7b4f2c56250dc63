"""The registry of compiler passes: name -> "module:Class", imported on first use.

One pass per module, the module named after the pass. The pipelines that the
driver runs are listed in cimc/pipeline.py.
"""

PASSES: dict[str, str] = {
    "canonicalize": "passes.canonicalize:Canonicalize",
    "fold-qdq": "passes.fold_qdq:FoldQdq",
    "lower": "passes.lower:Lower",
    "tile": "passes.tile:Tile",
    "replicate": "passes.replicate:Replicate",
    "place": "passes.place:Place",
    "schedule": "passes.schedule:Schedule",
    "emit-asm": "passes.emit_asm:EmitAsm",
}
