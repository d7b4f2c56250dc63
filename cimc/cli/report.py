"""`cimc report r.json`: a compile report (`--report`) printed as text: its main
figures, the table of phases of a model run in phases, then the per-layer table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# (report key, label, format) of the summary, in order; absent keys are skipped.
SUMMARY = (
    ("target", "target", "{}"),
    ("figures_from", "figures from", "{}"),
    ("phase_count", "phases", "{:,}"),
    ("batch", "images per run (batch)", "{:,}"),
    ("cycles", "cycles per run", "{:,.0f}"),
    ("latency_us", "latency (us)", "{:,.2f}"),
    ("throughput", "throughput (inferences/s)", "{:,.1f}"),
    ("throughput_bound", "throughput bound (inferences/s)", "{:,.1f}"),
    ("energy_nj", "energy per inference (nJ)", "{:,.1f}"),
    ("crossbars_used", "crossbars used", "{:,}"),
    ("cores_used", "cores used", "{:,}"),
    ("utilization", "cell utilization", "{:.3f}"),
    ("mvm_count", "MVMs per inference", "{:,}"),
    ("hop_bytes", "hop-bytes per inference", "{:,}"),
    ("programmed_bytes", "weight bytes programmed per run", "{:,}"),
    ("instructions", "instructions (static)", "{:,}"),
)
# Per-phase columns (a model run in phases): (key, heading).
PHASE_COLUMNS = (("phase", "phase"), ("layers", "layers"), ("crossbars", "crossbars"),
                 ("programmed_bytes", "programmed B"), ("loaded", "loads B/image"),
                 ("stored", "stores B/image"), ("program_cycles", "program cycles"),
                 ("compute_cycles", "compute cycles"))
# Per-layer columns: (key, heading).
COLUMNS = (("name", "layer"), ("kind", "kind"), ("cores", "cores"),
           ("crossbars", "crossbars"), ("mvms", "MVMs"), ("weight_cells", "cells"),
           ("hop_bytes_out", "hop-bytes out"), ("global_bytes_in", "loads B"),
           ("global_bytes_out", "stores B"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="print a compile report (--report r.json) as tables",
        description="Print the main figures and the per-layer table of a compile report.")
    parser.add_argument("report", metavar="R.json", help="report written by --report")
    parser.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    sys.stdout.write(report_text(read_report(args.report)))
    return 0


def read_report(path: str) -> dict[str, Any]:
    """A compile report with per-layer figures, or a CimcError saying what is wrong."""
    from cimc.diagnostics import CimcError

    try:
        with open(path) as file:
            report = json.load(file)
    except OSError as exc:
        raise CimcError(f"cannot read report {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CimcError(f"{path} is not a JSON report ({exc}); give the file "
                        "`cimc compile --report` wrote") from None
    if not isinstance(report, dict) or "layers" not in report:
        raise CimcError(f"{path} has no per-layer figures; give a report written by "
                        "`cimc compile --report` (recompile if it is older)")
    return report


def report_text(report: dict[str, Any]) -> str:
    """The summary lines and the per-layer table of a compile report."""
    width = max(len(label) for _, label, _ in SUMMARY)
    lines = [f"{label:<{width}}  {form.format(report[key])}"
             for key, label, form in SUMMARY if key in report]
    if report.get("phases"):
        phases = [{**p, **p.get("spilled_bytes_per_image", {}),
                   "layers": _span(p.get("layers", []))} for p in report["phases"]]
        lines += _table(PHASE_COLUMNS, phases, 2)
    columns = COLUMNS + ((("phase", "phase"),) if report.get("phases") else ())
    lines += _table(columns, report["layers"], 2)
    return "\n".join(lines) + "\n"


def _table(columns: tuple[tuple[str, str], ...], items: list[dict[str, Any]],
           left: int) -> list[str]:
    """A blank line, then a table of `items` (the first `left` columns left-aligned)."""
    rows = [[_cell(item.get(key)) for key, _ in columns] for item in items]
    headings = [heading for _, heading in columns]
    widths = [max(len(text) for text in column) for column in zip(headings, *rows, strict=False)]
    lines = [""]
    for row in [headings, *rows]:
        cells = [text.ljust(w) if k < left else text.rjust(w)
                 for k, (text, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _span(names: list[str]) -> str:
    """A phase's layers: the first and the last, and how many."""
    if len(names) <= 2:
        return ", ".join(names)
    return f"{names[0]} .. {names[-1]} ({len(names)})"


def _cell(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if len(value) <= 4 else f"{len(value)} cores"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
