"""Pictures of a compile report (matplotlib, PNG and SVG): the mesh with each core
coloured by the layer doing most MVMs on it, and per-layer bars of MVMs and of the
hop-bytes each layer sends. Written byte-identically for equal reports (no dates, a
fixed SVG id salt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cimc.targets import Target

FORMATS = ("png", "svg")


def write_plots(report: dict[str, Any], target: Target, directory: Path) -> list[Path]:
    """mesh.{png,svg} and layers.{png,svg} of `report` in `directory`; the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "cimc"
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("mesh", _mesh), ("layers", _layers)):
        figure = draw(plt, report, target)
        for form in FORMATS:
            path = directory / f"{name}.{form}"
            metadata = {"Date": None} if form == "svg" else {"Software": None}
            figure.savefig(path, format=form, metadata=metadata)
            written.append(path)
        plt.close(figure)
    return written


def _mesh(plt: Any, report: dict[str, Any], target: Target) -> Any:
    """The cores on the mesh, coloured by the layer with the most MVMs on each."""
    owner: dict[int, tuple[float, str]] = {}
    layers = report["layers"]
    for layer in layers:
        share = max(layer["mvms"], 1) / max(len(layer["cores"]), 1)
        for core in layer["cores"]:
            if core not in owner or share > owner[core][0]:
                owner[core] = (share, layer["name"])
    names = [layer["name"] for layer in layers]
    colours = plt.get_cmap("tab20")
    per_tile = target.cores_per_tile
    figure, axes = plt.subplots(figsize=(max(4, target.mesh_x * 0.6),
                                         max(3, target.mesh_y * 0.6)))
    for core in range(target.cores):
        x, y = target.tile_of(core)
        slot = core % per_tile
        width = 0.9 / per_tile
        left = x - 0.45 + slot * width
        face = "#eeeeee" if core not in owner else colours(names.index(owner[core][1]) % 20)
        axes.add_patch(plt.Rectangle((left, y - 0.45), width, 0.9, facecolor=face,
                                     edgecolor="#999999", linewidth=0.5))
    for k, name in enumerate(names):
        if any(o[1] == name for o in owner.values()):
            axes.plot([], [], "s", color=colours(k % 20), label=name)
    axes.set_xlim(-0.6, target.mesh_x - 0.4)
    axes.set_ylim(target.mesh_y - 0.4, -0.6)
    axes.set_aspect("equal")
    axes.set_xticks(range(target.mesh_x))
    axes.set_yticks(range(target.mesh_y))
    axes.set_title(f"{report['target']}: cores by layer ({report['cores_used']} of "
                   f"{target.cores} used)")
    if owner:
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.tight_layout()
    return figure


def _layers(plt: Any, report: dict[str, Any], target: Target) -> Any:
    """Per-layer bars: MVMs per inference and hop-bytes sent."""
    layers = report["layers"]
    names = [layer["name"] for layer in layers]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True,
                                         figsize=(max(5, 0.35 * len(names) + 2), 5))
    top.bar(range(len(names)), [layer["mvms"] for layer in layers], color="#4c72b0")
    top.set_ylabel("MVMs per inference")
    bottom.bar(range(len(names)), [layer["hop_bytes_out"] for layer in layers],
               color="#dd8452")
    bottom.set_ylabel("hop-bytes sent")
    bottom.set_xticks(range(len(names)))
    bottom.set_xticklabels(names, rotation=90, fontsize="small")
    top.set_title(f"{report['target']}: per layer")
    figure.tight_layout()
    return figure
