"""Pictures of a compile report (matplotlib, PNG and SVG): the mesh with each core
coloured by the layer doing most MVMs on it, the load of every mesh link, and
per-layer bars of MVMs and of the hop-bytes each layer sends; and the curves of a
sweep (cimc.sweep): accuracy and agreement with the exact run against ADC bits, one
line per noise sigma. Written byte-identically for equal reports (no dates, a fixed
SVG id salt)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cimc.targets import Target

FORMATS = ("png", "svg")
# The files `sweep_plots` and `pipeline_plots` draw.
SWEEP_PLOTS = tuple(f"accuracy.{form}" for form in FORMATS)
PIPELINE_PLOTS = tuple(f"pipeline.{form}" for form in FORMATS)
# Instructions whose time in a trace is mostly waiting for other cores.
WAITING = ("recv", "sync", "halt")
WAITING_LABEL = "waiting (recv, sync, halt)"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "cimc"
    return plt


def _saved(figure: Any, form: str) -> bytes:
    buffer = io.BytesIO()
    metadata = {"Date": None} if form == "svg" else {"Software": None}
    figure.savefig(buffer, format=form, metadata=metadata)
    return buffer.getvalue()


# The pictures of a compile report, by name (`.png` and `.svg` each).
REPORT_PLOTS = ("mesh", "links", "layers")


def report_plots(report: dict[str, Any], target: Target) -> dict[str, bytes]:
    """mesh, links and layers (.png and .svg) of a compile report, by file name."""
    plt = _pyplot()
    drawn = {}
    for name in REPORT_PLOTS:
        figure = {"mesh": _mesh, "links": _links, "layers": _layers}[name](plt, report, target)
        for form in FORMATS:
            drawn[f"{name}.{form}"] = _saved(figure, form)
        plt.close(figure)
    return drawn


def write_plots(report: dict[str, Any], target: Target, directory: Path) -> list[Path]:
    """The report_plots of `report` in `directory`; the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in report_plots(report, target).items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
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
    _mesh_axes(axes, target)
    axes.set_title(f"{report['target']}: cores by layer ({report['cores_used']} of "
                   f"{target.cores} used)")
    if owner:
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.tight_layout()
    return figure


def _mesh_axes(axes: Any, target: Target) -> None:
    """Axes over the tiles of the mesh: one unit a tile, row 0 at the top."""
    axes.set_xlim(-0.6, target.mesh_x - 0.4)
    axes.set_ylim(target.mesh_y - 0.4, -0.6)
    axes.set_aspect("equal")
    axes.set_xticks(range(target.mesh_x))
    axes.set_yticks(range(target.mesh_y))


def _links(plt: Any, report: dict[str, Any], target: Target) -> Any:
    """The tiles of the mesh and the bytes per inference over each directed link (XY
    routes of the traffic model), the two directions of a link side by side."""
    loads = report.get("link_bytes", [])
    figure, axes = plt.subplots(figsize=(max(4.5, target.mesh_x * 0.7),
                                         max(3, target.mesh_y * 0.6)))
    xs, ys = zip(*[(x, y) for x in range(target.mesh_x) for y in range(target.mesh_y)],
                 strict=True)
    axes.scatter(xs, ys, s=30, color="#cccccc", zorder=1)
    largest = max((link["bytes"] for link in loads), default=0)
    colours = plt.get_cmap("plasma")
    for link in loads:
        (ax, ay), (bx, by) = link["from"], link["to"]
        share = link["bytes"] / largest
        # Offset to the right of the direction of travel, so both directions show.
        off_x, off_y = 0.08 * (by - ay), -0.08 * (bx - ax)
        axes.annotate("", xy=(bx + off_x, by + off_y), xytext=(ax + off_x, ay + off_y),
                      arrowprops={"arrowstyle": "->", "color": colours(share),
                                  "linewidth": 0.8 + 3.2 * share, "shrinkA": 4, "shrinkB": 4},
                      zorder=2)
    if largest:
        mappable = plt.cm.ScalarMappable(cmap=colours, norm=plt.Normalize(0, largest))
        figure.colorbar(mappable, ax=axes, label="bytes per inference")
    else:
        axes.text((target.mesh_x - 1) / 2, (target.mesh_y - 1) / 2,
                  "no message crosses a mesh link", ha="center", va="center")
    _mesh_axes(axes, target)
    axes.set_title(f"{report['target']}: link load (largest {largest} bytes, "
                   f"{report['hop_bytes']} hop-bytes)")
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


def sweep_plots(sweep: dict[str, Any]) -> dict[str, bytes]:
    """accuracy.{png,svg} of a sweep (SweepResult.as_dict()) by file name: a column per
    target setting, accuracy (top) and agreement with the exact run (bottom) against
    ADC bits ('ideal' rightmost), one line per noise sigma; the exact run's accuracy
    dashed, the ADC bits an exact partial sum needs dotted."""
    plt = _pyplot()
    settings = [(e["target"], e["cell_bits"], e["dac_bits"]) for e in sweep["exact"]]
    points = sweep["points"]
    bits = sorted({p["adc_bits"] for p in points if p["adc_bits"] is not None})
    ideal = any(p["adc_bits"] is None for p in points)
    where = {b: k for k, b in enumerate(bits)}
    ticks = [str(b) for b in bits] + (["ideal"] if ideal else [])
    sigmas = list(dict.fromkeys(p["noise"] for p in points))
    colours = plt.get_cmap("viridis")
    figure, axes = plt.subplots(2, len(settings), squeeze=False, sharex=True, sharey="row",
                                figsize=(1.5 + 3.5 * len(settings), 5.5))
    for column, (setting, exact) in enumerate(zip(settings, sweep["exact"], strict=True)):
        mine = [p for p in points if (p["target"], p["cell_bits"], p["dac_bits"]) == setting]
        for row, key in enumerate(("accuracy", "agreement")):
            ax = axes[row][column]
            for k, sigma in enumerate(sigmas):
                line = [p for p in mine if p["noise"] == sigma]
                xs = [where.get(p["adc_bits"], len(bits)) for p in line]
                ax.plot(xs, [p[key] for p in line], marker="o", markersize=3,
                        color=colours(k / max(len(sigmas) - 1, 1)), label=f"sigma {sigma:g}")
            if key == "accuracy":
                ax.axhline(exact["accuracy"], color="#444444", linestyle="--", linewidth=0.8,
                           label="exact")
                ax.set_title(f"{setting[0]}, {setting[1]}-bit cells, {setting[2]}-bit DAC",
                             fontsize="medium")
            needed = mine[0]["exact_adc_bits"] if mine else None
            if needed in where:
                ax.axvline(where[needed], color="#999999", linestyle=":", linewidth=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, linewidth=0.3)
            if column == 0:
                ax.set_ylabel("accuracy" if key == "accuracy" else "agreement with exact")
        axes[1][column].set_xticks(range(len(ticks)))
        axes[1][column].set_xticklabels(ticks)
        axes[1][column].set_xlabel("ADC bits")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.suptitle(f"{sweep['model']}: {sweep['samples']} samples")
    figure.tight_layout()
    drawn = {name: _saved(figure, name.rsplit(".", 1)[1]) for name in SWEEP_PLOTS}
    plt.close(figure)
    return drawn


def pipeline_plots(trace: dict[str, Any], title: str) -> dict[str, bytes]:
    """pipeline.{png,svg}: a Gantt chart of a simulated run from its trace-event document
    (isa/simulator/trace.py): a row per core, its instructions' time coloured by the
    layer of their task ("conv1#0 row 3: ..." -> conv1), untasked time grey, time in
    recv, sync and halt (waiting for other cores) light grey."""
    import re

    plt = _pyplot()
    spans: dict[tuple[int, str], list[tuple[float, float]]] = {}
    cores: set[int] = set()
    for event in trace["traceEvents"]:
        if event.get("ph") == "M":
            cores.add(int(event["tid"]))
        if event.get("ph") != "X":
            continue
        name = str(event["name"])
        mnemonic = name.rsplit(": ", 1)[-1].split(" ", 1)[0]
        if mnemonic in WAITING:
            layer = WAITING_LABEL
        elif " row " in name:
            layer = re.sub(r"#\d+$", "", name.split(" row ", 1)[0])
        else:
            layer = ""
        spans.setdefault((int(event["tid"]), layer), []).append(
            (float(event["ts"]), float(event["dur"])))
        cores.add(int(event["tid"]))
    order = sorted(cores)
    row = {core: k for k, core in enumerate(order)}
    layers = list(dict.fromkeys(layer for _, layer in sorted(
        spans, key=lambda key: min(start for start, _ in spans[key]))
        if layer and layer != WAITING_LABEL))
    colours = plt.get_cmap("tab20")

    def colour(layer: str) -> Any:
        if layer == WAITING_LABEL:
            return "#e4e4e4"
        return colours(layers.index(layer) % 20) if layer else "#999999"

    figure, axes = plt.subplots(figsize=(9, max(2.5, 0.35 * len(order) + 1.5)))
    for (core, layer), bars in sorted(spans.items()):
        axes.broken_barh(bars, (row[core] - 0.4, 0.8), facecolors=colour(layer), linewidth=0)
    for layer in [*layers, *(name for name in ("", WAITING_LABEL)
                             if any(key[1] == name for key in spans))]:
        axes.plot([], [], "s", color=colour(layer), label=layer or "(no task)")
    axes.set_yticks(range(len(order)))
    axes.set_yticklabels([f"core {core}" for core in order], fontsize="small")
    axes.set_ylim(len(order) - 0.4, -0.6)
    axes.set_xlabel("time (us)")
    axes.set_title(title)
    if spans:
        axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.tight_layout()
    drawn = {name: _saved(figure, name.rsplit(".", 1)[1]) for name in PIPELINE_PLOTS}
    plt.close(figure)
    return drawn
