"""`cimc plot r.json DIR`: pictures of a compile report (mesh.png/svg: the cores by
layer; links.png/svg: bytes over each mesh link; layers.png/svg: MVMs and hop-bytes
per layer). `cimc compile --plots DIR` draws the same."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw a compile report (--report r.json) as PNG and SVG pictures",
        description="Write mesh.png/svg (cores coloured by layer), links.png/svg (bytes "
                    "over each mesh link) and layers.png/svg (MVMs and hop-bytes per layer) "
                    "of a compile report into DIR.")
    parser.add_argument("report", metavar="R.json", help="report written by --report")
    parser.add_argument("directory", metavar="DIR", help="where the pictures go")
    parser.add_argument("--target", metavar="NAME|FILE",
                        help="the report's target when it is not a bundled one (a file)")
    parser.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cimc.cli.report import read_report
    from cimc.diagnostics import CimcError
    from cimc.emit.plots import write_plots
    from cimc.targets import list_targets, load_target

    report = read_report(args.report)
    name = args.target or report.get("target", "")
    if not args.target and name not in list_targets():
        raise CimcError(f"{args.report} was compiled for target {name!r}, not a bundled one; "
                        "give its file with --target FILE")
    target = load_target(name)
    for path in write_plots(report, target, Path(args.directory)):
        print(path)
    return 0
