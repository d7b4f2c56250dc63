"""The registry of compiler passes: name -> "module:Class", imported on first use.

One pass per module, the module named after the pass; a pass with helpers of
its own is a package of that name holding them (canonicalize, lower). The
pipelines that the driver runs are listed in cimc/pipeline.py.
"""

PASSES: dict[str, str] = {
    "canonicalize": "cimc.passes.canonicalize:Canonicalize",
    "fold-qdq": "cimc.passes.fold_qdq:FoldQdq",
    "lower": "cimc.passes.lower:Lower",
    "tile": "cimc.passes.tile:Tile",
    "partition": "cimc.passes.partition:Partition",
    "replicate": "cimc.passes.replicate:Replicate",
    "place": "cimc.passes.place:Place",
    "schedule": "cimc.passes.schedule:Schedule",
}
