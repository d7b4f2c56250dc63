"""The `cimc` command line: one sub-command per module in cimc/cli/.

`cimc MODEL.onnx -o prog.s` is shorthand for `cimc compile MODEL.onnx -o prog.s`.
User errors (CimcError) print one clear message and exit with status 1, never
a traceback; usage errors exit with status 2. SIGTERM, SIGHUP and SIGINT
during a command remove its staged outputs and exit with 128 + the signal
number (cimc.outputs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from cimc.diagnostics import CimcError

# Sub-command name -> module defining `register(subparsers)`; the module's
# heavy imports happen inside its command function, so `cimc --help` is fast.
COMMANDS: dict[str, str] = {
    "compile": "cimc.cli.compile",
    "run": "cimc.cli.run",
    "opt": "cimc.cli.opt",
    "sim": "cimc.cli.sim",
    "asm": "cimc.cli.asm",
    "disasm": "cimc.cli.disasm",
    "targets": "cimc.cli.targets",
    "report": "cimc.cli.report",
    "plot": "cimc.cli.plot",
    "sweep": "cimc.cli.sweep",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cimc",
        description="Compile ONNX models to compute-in-memory accelerator programs.",
        epilog="`cimc MODEL.onnx -o prog.s ...` is short for `cimc compile MODEL.onnx ...`.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # for `--time-passes`, which times the whole command
    # As the program (no argv given), how long the process ran before this point.
    startup = process_age() if argv is None else None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "compile")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (argparse printed it) or --help: its status
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.started, args.startup = started, startup
    from cimc.diagnostics import end_progress, show_progress
    from cimc.outputs import abort_on_signals

    # A status line of stages on a terminal, unless --quiet (commands that have it).
    show_progress(sys.stderr.isatty() and not getattr(args, "quiet", False))
    try:
        with abort_on_signals():
            status = args.func(args)
    except CimcError as exc:
        end_progress()
        print(f"cimc: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        end_progress()
        # A file problem a command did not anticipate: still the user's, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cimc: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        end_progress()
        print("cimc: error: out of memory; the model or the inputs are too large for this "
              "machine", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        end_progress()
        print("cimc: interrupted", file=sys.stderr)
        return 130
    finally:
        show_progress(False)
    end_progress()
    return int(status or 0)


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat), else None."""
    import os

    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / ticks, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
