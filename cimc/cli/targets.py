"""`cimc targets list | show NAME|FILE | check FILE...`: inspect target descriptions."""

from __future__ import annotations

import argparse
import sys

from cimc.diagnostics import CimcError, warn


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "targets", help="list, show or check target descriptions",
        description="List the bundled targets, show a resolved target, or check a target file.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="bundled targets with a one-line description")
    listing.set_defaults(func=list_command)
    show = actions.add_parser("show", help="a target with all defaults filled in, and a summary")
    show.add_argument("target", metavar="NAME|FILE", help="bundled target name or .toml file")
    show.set_defaults(func=show_command)
    check = actions.add_parser("check", help="validate target files")
    check.add_argument("files", metavar="FILE", nargs="+", help=".toml file or bundled name")
    check.set_defaults(func=check_command)


def list_command(args: argparse.Namespace) -> int:
    from cimc.targets import list_targets, load_target

    names = list_targets()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {load_target(name).description}")
    return 0


def show_command(args: argparse.Namespace) -> int:
    from cimc.targets import load_target, target_warnings
    from cimc.targets.describe import summary_text, to_toml

    target = load_target(args.target)
    print(f"# {target.source}")
    print(to_toml(target), end="")
    print("\n# summary")
    print("".join(f"#{line}\n" for line in summary_text(target).splitlines()), end="")
    for note in target_warnings(target):
        warn(note)
    return 0


def check_command(args: argparse.Namespace) -> int:
    from cimc.targets import load_target, target_warnings
    from cimc.targets.describe import summary_text

    failed = 0
    for file in args.files:
        try:
            target = load_target(file)
        except CimcError as exc:
            if len(args.files) == 1:
                raise
            print(f"cimc: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{file}: ok")
        print(summary_text(target), end="")
        for note in target_warnings(target):
            warn(f"{file}: {note}")
    return 1 if failed else 0
